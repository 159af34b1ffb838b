use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use lab_console::Console;
use miner::cli::Cli;
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    lab_console::init_logging(cli.log_format);
    let shutdown = CancellationToken::new();
    lab_console::cancel_on_signal(shutdown.clone());
    // A progress bar where a person watches a run of known length; lines otherwise, so that
    // a log or a pipe gets one line per job.
    let output = match cli.count {
        _ if cli.quiet => miner::Output::Quiet,
        Some(count) if std::io::stdout().is_terminal() => miner::Output::progress_bar(count),
        _ => miner::Output::Lines(Console::plain()),
    };
    match miner::run(cli.config(), output, shutdown).await {
        Ok(report) => {
            tracing::info!(
                published = report.published,
                ack_p50_us = report.ack_p50_us,
                ack_p99_us = report.ack_p99_us,
                "miner done"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("miner: {error}");
            ExitCode::FAILURE
        }
    }
}
