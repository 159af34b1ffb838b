use std::process::ExitCode;

use broker::cli::Cli;
use broker::queue::MemoryStore;
use broker::{print_results, Broker};
use clap::Parser;
use lab_console::Console;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    lab_console::init_logging();
    let address = cli.listen_address();
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("broker: cannot listen on {address}: {error} (is another broker running? try another --port)");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    lab_console::cancel_on_signal(shutdown.clone());
    let broker = Broker::new(
        MemoryStore::with_dead_letter_limit(cli.dead_letter_limit),
        cli.settings(),
        print_results(Console::plain()),
        shutdown.clone(),
    );
    tracing::info!(%address, "broker listening");
    broker::serve(broker, listener, shutdown).await;
    ExitCode::SUCCESS
}
