use std::process::ExitCode;

use broker::cli::{Cli, Command, ServeArgs};
use broker::queue::MemoryStore;
use broker::{count_results, print_results, Broker};
use clap::Parser;
use lab_console::Console;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    lab_console::init_logging(cli.log_format);
    match cli.command {
        Some(Command::Stats(stats)) => {
            let token = stats.token.unwrap_or_default();
            match broker::stats::show(&stats.broker, &token, stats.json, stats.watch).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("broker stats: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        None => serve(cli.serve).await,
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let address = args.listen_address();
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "broker: cannot listen on {address} ({}): is another broker running? Stop it, or choose another --port",
                error.kind()
            );
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    lab_console::cancel_on_signal(shutdown.clone());
    let observer = if args.quiet {
        count_results()
    } else {
        print_results(Console::plain())
    };
    let store = MemoryStore::with_dead_letter_limit(args.dead_letter_limit);
    let broker = Broker::new(store, args.settings(), observer, shutdown.clone());
    tracing::info!(%address, "broker listening");
    broker::serve(broker, listener, shutdown).await;
    ExitCode::SUCCESS
}
