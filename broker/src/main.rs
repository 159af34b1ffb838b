use std::process::ExitCode;

use broker::cli::{Cli, Command};
use broker::program;

fn main() -> ExitCode {
    let cli: Cli = lab_console::usage::parse(&[]);
    lab_console::init_logging(cli.log_format);
    let threads = match cli.command {
        Some(Command::Stats(_) | Command::DeadLetters(_) | Command::TlsInit(_)) => 1,
        None => cli.serve.threads,
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.into())
            .enable_all()
            .build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => {
            eprintln!("broker: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command, its error on standard error after the command's name.
async fn run(cli: Cli) -> ExitCode {
    let (command, result) = match cli.command {
        Some(Command::Stats(args)) => ("broker stats", program::stats(args).await),
        Some(Command::DeadLetters(args)) => {
            ("broker dead-letters", program::dead_letters(args).await)
        }
        Some(Command::TlsInit(args)) => ("broker tls-init", program::tls_init(&args.dir)),
        None => ("broker", program::serve(cli.serve).await),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{command}: {error}");
            ExitCode::FAILURE
        }
    }
}
