use std::process::ExitCode;

use clap::Parser;
use lab::cli::Cli;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    lab_console::init_logging(cli.log_format);
    let shutdown = CancellationToken::new();
    lab_console::cancel_on_signal(shutdown.clone());
    match lab::cli::run(cli, shutdown).await {
        Ok(summary) => {
            println!(
                "lab: {} multiply and {} divide jobs completed, {} failed",
                summary.multiplied, summary.divided, summary.failed
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("lab: {error}");
            ExitCode::FAILURE
        }
    }
}
