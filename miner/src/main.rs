use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use lab_console::Console;
use miner::cli::Cli;
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli: Cli = lab_console::usage::parse(&[]);
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
    if !cli.jobs.is_empty() {
        return publish_chosen(&cli, output, shutdown).await;
    }
    let config = match cli.config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("miner: {error}");
            return ExitCode::FAILURE;
        }
    };
    match miner::run(config, output, shutdown).await {
        Ok(report) => {
            tracing::info!(
                "published {} jobs; the broker acknowledged half within {} and 99% within {}",
                report.published,
                lab_console::Rounded(Duration::from_micros(report.ack_p50_us)),
                lab_console::Rounded(Duration::from_micros(report.ack_p99_us))
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("miner: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Publishes the jobs given with `--job`; success only if every one was published.
async fn publish_chosen(cli: &Cli, output: miner::Output, shutdown: CancellationToken) -> ExitCode {
    let jobs = &cli.jobs;
    let link = match cli.broker.link() {
        Ok(link) => link,
        Err(error) => {
            eprintln!("miner: {error}");
            return ExitCode::FAILURE;
        }
    };
    let published = miner::chosen::run(link, &cli.topic, cli.buffer, jobs, output, shutdown).await;
    match published {
        Ok(job_ids) if job_ids.len() == jobs.len() => ExitCode::SUCCESS,
        Ok(job_ids) => {
            eprintln!(
                "miner: stopped with {} of the {} jobs published",
                job_ids.len(),
                jobs.len()
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("miner: {error}");
            ExitCode::FAILURE
        }
    }
}
