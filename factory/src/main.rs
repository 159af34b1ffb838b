use std::process::ExitCode;

use factory::cli::{Cli, GO_FLAGS};
use lab_console::Console;
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli: Cli = lab_console::usage::parse(GO_FLAGS);
    lab_console::init_logging(cli.log_format);
    let config = match cli.config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("factory: {error}");
            return ExitCode::FAILURE;
        }
    };
    let address = cli.listen_address();
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "factory: cannot listen on {address} ({}): is another factory on that port? Choose another --port, or --port 0 for a free one",
                error.kind()
            );
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    lab_console::cancel_on_signal(shutdown.clone());
    let console = if cli.quiet {
        Console::quiet()
    } else {
        Console::plain()
    };
    match factory::run(config, listener, console, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("factory: {error}");
            ExitCode::FAILURE
        }
    }
}
