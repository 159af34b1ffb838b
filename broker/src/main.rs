use anyhow::Context;
use broker::cli::Cli;
use broker::queue::MemoryStore;
use broker::{print_results, Broker};
use clap::Parser;
use lab_console::Console;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let address = cli.listen_address();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (is another broker running? try --port)"))?;
    let shutdown = CancellationToken::new();
    let broker = Broker::new(
        MemoryStore::new(),
        cli.settings(),
        print_results(Console::plain()),
        shutdown.clone(),
    );
    tracing::info!(%address, "broker listening");
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("stopping");
            shutdown.cancel();
        }
    });
    broker::serve(broker, listener, shutdown).await;
    Ok(())
}
