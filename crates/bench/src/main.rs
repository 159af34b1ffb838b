use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // The soak has a command line of its own: it is no workload of the suite.
    let result = if std::env::args().nth(1).as_deref() == Some("soak") {
        bench::soak::main(std::env::args().skip(1)).await
    } else {
        bench::cli::run(bench::cli::Cli::parse()).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
