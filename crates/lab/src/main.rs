use std::process::ExitCode;

use clap::Parser;
use lab::cli::{Cli, Command};
use lab_console::LineStart;
use tokio_util::sync::CancellationToken;

/// What `lab mark` logs when `RUST_LOG` is not set: the part it is marking, and errors. The
/// report says what its broker's and miners' own lines would.
const MARK_LOG_FILTER: &str = "error,lab::mark=info";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Mark(_)) => {
            lab_console::init_logging_with(cli.log_format, MARK_LOG_FILTER, LineStart::Stamped)
        }
        // The lab's log lines sit among its components' result lines, so they start alike.
        _ => lab_console::init_logging_with(
            cli.log_format,
            lab_console::DEFAULT_LOG_FILTER,
            LineStart::Component,
        ),
    }
    let shutdown = CancellationToken::new();
    lab_console::cancel_on_signal(shutdown.clone());
    match cli.command {
        None => match lab::cli::run(cli.lab, shutdown).await {
            Ok(summary) => {
                println!("lab: {summary}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("lab: {error}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Mark(args)) => lab::mark::main(args, shutdown).await,
        Some(Command::New(args)) => match lab::new::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("lab new: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
