//! `lab mark`: marks a factory program part by part, as a marker would by hand with four
//! terminals, but judged by what the broker sees instead of by eye.
//!
//! - [`process`]: the factory as a process in a group of its own, stopped and killed whole.
//! - [`watch`]: the harness's broker, which writes down every subscribe, publish and outcome.
//! - [`session`]: one part's broker and factory instances, and the waits with their deadlines.
//! - [`parts`]: the checks of Parts 1, 2a, 2b and 3.
//! - [`report`]: the lines, the scores, the JSON.
//!
//! A factory is just a command, so that any program that speaks the broker's protocol can be
//! marked the same way.

pub mod parts;
pub mod process;
pub mod report;
pub mod session;
pub mod watch;

use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use report::{Check, Part, PartReport, Report};

/// The buffer of the harness's topics: room for every job the harness publishes, so that only
/// a factory that floods the broker makes a publish wait.
const TOPIC_BUFFER: u32 = 1_000;

/// From a factory's start to its subscription: long enough for a `cargo run` that compiles.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Every other check: a right factory answers in milliseconds.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// One call of the broker to the factory: shorter than a check, so that a factory that hangs
/// is seen as a failed call within the check.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// From SIGINT to SIGKILL when the harness stops a factory.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The exit status when some check failed.
const SOME_CHECK_FAILED: u8 = 1;
/// The exit status when the harness itself could not run (it is clap's for usage errors too).
const HARNESS_FAILED: u8 = 2;
/// The exit status after Ctrl-C, as a shell reports a program stopped by SIGINT.
const INTERRUPTED: u8 = 130;

const EXAMPLES: &str = "\
Examples:
  cargo run -p lab -- mark --factory './target/debug/factory --port {port} --broker {broker}'
  cargo run -p lab -- mark --parts 1,2a --factory 'cargo run -q --manifest-path ../mine/Cargo.toml -- --port {port} --broker {broker}'
  cargo run -p lab -- mark --json --factory '...' > grade.json

Exit status: 0 when every check passes, 1 when some check fails, 2 when the harness cannot run.";

/// Options of `lab mark`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct MarkArgs {
    /// The command that starts the factory, run with `sh -c`.
    ///
    /// `{port}` stands for the port it must serve on, `{broker}` for the broker's address
    /// (127.0.0.1:PORT), `{tls-dir}` for --tls-dir.
    #[arg(long, value_name = "COMMAND", help_heading = "Factory")]
    pub factory: String,
    /// The parts to mark, separated by commas.
    ///
    /// Each part is marked against a broker and a factory of its own.
    #[arg(long, value_name = "PART[,...]", value_enum, value_delimiter = ',', default_values_t = Part::ALL, help_heading = "Factory")]
    pub parts: Vec<Part>,
    /// Write one JSON object for a grade sheet instead of the text report.
    ///
    /// The same checks and scores as the text report, on standard output.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    /// How long a factory has from its start to its subscription.
    ///
    /// Long enough by default for a `cargo run` that compiles.
    #[arg(long, value_name = "DURATION", default_value_t = DEFAULT_START_TIMEOUT.into(), help_heading = "Deadlines")]
    pub start_timeout: humantime::Duration,
    /// How long every other check waits for what it checks.
    ///
    /// A right factory answers in milliseconds.
    #[arg(long, value_name = "DURATION", default_value_t = DEFAULT_CHECK_TIMEOUT.into(), help_heading = "Deadlines")]
    pub check_timeout: humantime::Duration,
    /// How long one call of the broker to the factory may take.
    ///
    /// Keep it shorter than --check-timeout, so that a factory that hangs is seen as a failed
    /// call within the check.
    #[arg(long, value_name = "DURATION", default_value_t = DEFAULT_CALL_TIMEOUT.into(), help_heading = "Deadlines")]
    pub call_timeout: humantime::Duration,
    /// How long a factory has to exit after SIGINT before it is killed.
    ///
    /// The factory's whole process group is killed with SIGKILL after it.
    #[arg(long, value_name = "DURATION", default_value_t = DEFAULT_STOP_TIMEOUT.into(), help_heading = "Deadlines")]
    pub stop_timeout: humantime::Duration,
    /// Mark over TLS, with the files of `broker tls-init DIR`.
    ///
    /// The harness's broker serves and dials in TLS; give the factory `--tls-dir {tls-dir}`.
    #[arg(long, value_name = "DIR", help_heading = "Security")]
    pub tls_dir: Option<std::path::PathBuf>,
}

impl MarkArgs {
    /// Marking `factory` with the default parts and deadlines.
    pub fn new(factory: &str) -> Self {
        Self {
            factory: factory.to_owned(),
            parts: Part::ALL.to_vec(),
            json: false,
            start_timeout: DEFAULT_START_TIMEOUT.into(),
            check_timeout: DEFAULT_CHECK_TIMEOUT.into(),
            call_timeout: DEFAULT_CALL_TIMEOUT.into(),
            stop_timeout: DEFAULT_STOP_TIMEOUT.into(),
            tls_dir: None,
        }
    }

    fn deadlines(&self) -> report::Deadlines {
        let seconds = |duration: humantime::Duration| Duration::from(duration).as_secs_f64();
        report::Deadlines {
            start_s: seconds(self.start_timeout),
            check_s: seconds(self.check_timeout),
            call_s: seconds(self.call_timeout),
            stop_s: seconds(self.stop_timeout),
        }
    }
}

/// Marks the factory part by part. Every process it started is killed before it returns.
pub async fn run(args: &MarkArgs) -> Report {
    let mut parts = args.parts.clone();
    parts.sort();
    parts.dedup();
    let mut reports = Vec::new();
    for part in parts {
        tracing::info!("marking part {part}");
        reports.push(parts::mark(part, args).await);
    }
    Report::new(&args.factory, args.deadlines(), reports)
}

/// `lab mark` as a program: the report on standard output, and its exit status. Ctrl-C stops
/// the marking, and every process it started with it.
pub async fn main(args: MarkArgs, shutdown: CancellationToken) -> ExitCode {
    if args.factory.trim().is_empty() {
        eprintln!("lab mark: --factory needs a command, e.g. --factory './target/debug/factory --port {{port}} --broker {{broker}}'");
        return ExitCode::from(HARNESS_FAILED);
    }
    // Files that cannot be used fail every part the same way: say so once, before any.
    if let Some(dir) = &args.tls_dir {
        let files = transport::TlsFiles::in_dir(dir);
        if let Err(error) = files.server().and_then(|_| files.client()) {
            eprintln!("lab mark: {error}");
            return ExitCode::from(HARNESS_FAILED);
        }
    }
    let report = tokio::select! {
        report = run(&args) => report,
        // Dropping the marking drops its factory processes, which kills their groups.
        _ = shutdown.cancelled() => {
            eprintln!("lab mark: interrupted; every process it started was killed");
            return ExitCode::from(INTERRUPTED);
        }
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(SOME_CHECK_FAILED)
    }
}
