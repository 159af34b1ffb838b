use std::process::ExitCode;

use clap::Parser;
use lab_console::Console;
use miner::cli::Cli;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    lab_console::init_logging(cli.log_format);
    let shutdown = CancellationToken::new();
    lab_console::cancel_on_signal(shutdown.clone());
    match miner::run(cli.config(), Console::plain(), shutdown).await {
        Ok(report) => {
            tracing::info!(published = report.published, "miner done");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("miner: {error}");
            ExitCode::FAILURE
        }
    }
}
