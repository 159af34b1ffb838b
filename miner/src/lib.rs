//! A pairbroker miner: creates a topic and publishes random jobs to it, or jobs chosen one by
//! one.
//!
//! - [`jobs`]: the random Pairs and Triplets, reproducible from a seed, and jobs read from
//!   text (`12,34`).
//! - [`chosen`]: the chosen jobs published in order ([`publish_jobs`]).
//! - `topic`: the topic created and each job published until stored, for both kinds of job.
//! - [`batching`]: the publishers' jobs sent to the broker together, a batch per call.
//! - [`cli`]: the command line of the `miner` program.
//!
//! [`run`] publishes random jobs from `concurrency` publishers at once until the count is
//! reached or shutdown is signalled.

pub mod batching;
pub mod chosen;
pub mod cli;
pub mod jobs;
mod topic;

pub use chosen::publish_jobs;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use lab_console::Console;
use parking_lot::Mutex;
use stubs::{BrokerError, Job};
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;
use transport::{ConnectError, LinkConfig, LinkError};

use crate::jobs::JobSource;
use crate::topic::TopicLink;

/// What a miner does.
#[derive(Clone, Debug)]
pub struct MinerConfig {
    /// The brokers, and how to reach them.
    pub link: LinkConfig,
    /// The topic to publish to.
    pub topic: String,
    /// The buffer of the topic, if the miner creates it.
    pub buffer: u32,
    /// The pause between two publishes of one publisher; zero publishes as fast as it can.
    pub interval: Duration,
    /// Jobs per second for all publishers together, on a fixed schedule that replaces
    /// `interval`; `None` leaves the pace to `interval`.
    pub rate: Option<u32>,
    /// How many jobs to publish in all; `None` publishes until stopped.
    pub count: Option<u64>,
    /// Publish Triplets instead of Pairs.
    pub triplets: bool,
    /// The largest random integer.
    pub max: i64,
    /// The seed of the random jobs; `None` seeds from the operating system.
    pub seed: Option<u64>,
    /// How many publishers run at once.
    pub concurrency: u32,
}

/// Why a miner stopped early.
#[derive(Debug, thiserror::Error)]
pub enum MinerError {
    /// The broker cannot be reached.
    #[error("{}", lab_console::unreachable_broker(.0))]
    BrokerUnreachable(#[source] ConnectError),
    /// The broker went away and did not come back in time, or stopped answering.
    #[error("lost the broker while trying to {action}: {error}; is it still running? Start it again ({start})", start = lab_console::how_to_start("broker"))]
    BrokerLost {
        /// What the miner asked for.
        action: String,
        /// What went wrong (shared by the jobs of a batch).
        #[source]
        error: Arc<LinkError>,
    },
    /// The broker refused a request.
    #[error("the broker refused to {action}: {error}")]
    Refused {
        /// What the miner asked for.
        action: String,
        /// Why.
        #[source]
        error: BrokerError,
    },
    /// The settings cannot work.
    #[error("{0}")]
    InvalidConfig(String),
}

impl MinerError {
    /// What failed, as a log line says it, when a later try may succeed: the broker could not
    /// store what was asked, or did not answer in time.
    fn transient_cause(&self) -> Option<String> {
        match self {
            MinerError::Refused { action, error } if error.is_transient() => {
                Some(format!("the broker could not {action} for now ({error})"))
            }
            MinerError::BrokerLost { action, error } if error.is_transient() => {
                Some(format!("the broker could not {action} for now ({error})"))
            }
            _ => None,
        }
    }
}

/// What a miner did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinerReport {
    /// Jobs the broker accepted.
    pub published: u64,
    /// Median time from sending a job until the broker acknowledged it, retries included, in
    /// microseconds (0 when nothing was published).
    pub ack_p50_us: u64,
    /// 99th percentile of the same.
    pub ack_p99_us: u64,
}

/// The longest acknowledgement time told apart: ten minutes, in microseconds.
const MAX_ACK_US: u64 = 600_000_000;

/// How the miner shows what it publishes.
#[derive(Clone, Debug)]
pub enum Output {
    /// A line per job on a console.
    Lines(Console),
    /// A progress bar with rate and ETA, for `--count` on a terminal. The run's log lines are
    /// printed above it.
    Progress(ProgressBar),
    /// Nothing per job: for load, where even a buffered line per job costs more than a publish.
    Quiet,
}

impl Output {
    /// A progress bar for `count` jobs on standard error.
    pub fn progress_bar(count: u64) -> Self {
        let bar = ProgressBar::new(count);
        bar.set_style(progress_style());
        Self::Progress(bar)
    }

    /// Where the run's logs go: for a progress bar, to the current subscriber with the bar
    /// cleared around each line; otherwise nowhere new (`None`).
    fn logs(&self) -> Option<tracing::Dispatch> {
        match self {
            Output::Progress(bar) => Some(tracing::Dispatch::new(AboveTheBar {
                logs: tracing::dispatcher::get_default(tracing::Dispatch::clone),
                max_level: tracing::level_filters::LevelFilter::current(),
                bar: bar.clone(),
            })),
            Output::Lines(_) | Output::Quiet => None,
        }
    }

    /// Shows that the broker stored `job` in `topic` as `job_id`.
    fn published(&self, job: Job, topic: &str, job_id: u64) {
        match self {
            Output::Lines(console) => {
                console.line(format_args!("published {job} to {topic} (job {job_id})"))
            }
            Output::Progress(bar) => bar.inc(1),
            Output::Quiet => {}
        }
    }
}

impl From<Console> for Output {
    fn from(console: Console) -> Self {
        Self::Lines(console)
    }
}

/// `████████░░░░ 10/50 jobs  66/s  ETA 1s`.
fn progress_style() -> ProgressStyle {
    ProgressStyle::with_template("{bar:40} {pos}/{len} jobs  {rate}  ETA {eta}")
        .map(|style| {
            style.with_key("rate", |state: &ProgressState, out: &mut dyn fmt::Write| {
                let _ = out.write_str(&rounded_rate(state.per_sec()));
            })
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A rate for a person to read: whole jobs a second, with one decimal below ten, where a whole
/// number would say too little (`0.5/s`, `3.2/s`, `66/s`). indicatif's own `{per_sec}` shows
/// four decimals that change at every redraw.
fn rounded_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() {
        return "-/s".to_owned();
    }
    // Rounded to tenths first, so that 9.96 reads 10/s rather than 10.0/s.
    let tenths = (per_sec * 10.0).round() / 10.0;
    if tenths < 10.0 {
        format!("{tenths:.1}/s")
    } else {
        format!("{per_sec:.0}/s")
    }
}

/// The run's logs written above the progress bar: each event goes to `logs` (the subscriber
/// that was current) while the bar is cleared, and the bar is drawn again below it. Without
/// this a log line lands under the bar, which stays above it as a stale copy while the live bar
/// redraws on the line after. Everything else is handed to `logs` as it is, but for `current_span`, whose type `tracing`
/// does not export: nothing in the miner asks for `Span::current()`.
struct AboveTheBar {
    logs: tracing::Dispatch,
    /// `logs`' most verbose level, read when it was current; [`tracing::Dispatch`] does not
    /// tell it, and a wrapper without a hint would let every level through to the filter.
    max_level: tracing::level_filters::LevelFilter,
    bar: ProgressBar,
}

impl tracing::Subscriber for AboveTheBar {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.logs.register_callsite(metadata)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.max_level)
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        self.logs.enabled(metadata)
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.logs.new_span(span)
    }

    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        self.logs.record(span, values)
    }

    fn record_follows_from(&self, span: &tracing::span::Id, follows: &tracing::span::Id) {
        self.logs.record_follows_from(span, follows)
    }

    fn event(&self, event: &tracing::Event<'_>) {
        self.bar.suspend(|| self.logs.event(event))
    }

    fn enter(&self, span: &tracing::span::Id) {
        self.logs.enter(span)
    }

    fn exit(&self, span: &tracing::span::Id) {
        self.logs.exit(span)
    }

    fn clone_span(&self, id: &tracing::span::Id) -> tracing::span::Id {
        self.logs.clone_span(id)
    }

    fn try_close(&self, id: tracing::span::Id) -> bool {
        self.logs.try_close(id)
    }
}

/// Creates the topic and publishes until the count is reached or `shutdown` is cancelled.
/// Publishes in flight when `shutdown` comes are finished first.
pub async fn run(
    config: MinerConfig,
    output: impl Into<Output>,
    shutdown: CancellationToken,
) -> Result<MinerReport, MinerError> {
    let output = output.into();
    match output.logs() {
        // The publishers' logs reach it too: each is spawned with the subscriber current here.
        Some(logs) => {
            run_with(config, output, shutdown)
                .with_subscriber(logs)
                .await
        }
        None => run_with(config, output, shutdown).await,
    }
}

async fn run_with(
    config: MinerConfig,
    output: Output,
    shutdown: CancellationToken,
) -> Result<MinerReport, MinerError> {
    if config.concurrency == 0 {
        return Err(MinerError::InvalidConfig(
            "--concurrency must be at least 1".into(),
        ));
    }
    if config.rate == Some(0) {
        return Err(MinerError::InvalidConfig(
            "--rate must be at least 1".into(),
        ));
    }
    let source = JobSource::new(config.triplets, config.max, config.seed)
        .map_err(MinerError::InvalidConfig)?;
    let Some((topic, batcher_task)) =
        TopicLink::open(&config.link, &config.topic, config.buffer, &shutdown).await?
    else {
        return Ok(MinerReport::default());
    };
    let shared = Arc::new(Publishers {
        topic,
        schedule: config
            .rate
            .map(|rate| (Instant::now(), Duration::from_secs(1) / rate)),
        config,
        output,
        source: Mutex::new(source),
        claimed: AtomicU64::new(0),
        published: AtomicU64::new(0),
        acknowledged_in: Mutex::new(
            Histogram::new_with_bounds(1, MAX_ACK_US, 2)
                .expect("the bounds are constants that hdrhistogram accepts"),
        ),
        shutdown,
    });
    let mut publishers = tokio::task::JoinSet::new();
    for _ in 0..shared.config.concurrency {
        let shared = shared.clone();
        publishers.spawn(async move { shared.publish_loop().await }.with_current_subscriber());
    }
    let mut first_error = None;
    while let Some(finished) = publishers.join_next().await {
        let result = finished.unwrap_or_else(|error| {
            Err(MinerError::InvalidConfig(format!(
                "a publisher task failed: {error}"
            )))
        });
        if let Err(error) = result {
            // One publisher's failure stops the others: the broker is gone or refuses.
            shared.shutdown.cancel();
            first_error.get_or_insert(error);
        }
    }
    if let Output::Progress(bar) = &shared.output {
        bar.finish();
    }
    let published = shared.published.load(Ordering::Relaxed);
    let (ack_p50_us, ack_p99_us) = {
        let acknowledged_in = shared.acknowledged_in.lock();
        (
            acknowledged_in.value_at_quantile(0.5),
            acknowledged_in.value_at_quantile(0.99),
        )
    };
    // Every publisher has its answer: the batcher ends once its last handle is dropped.
    drop(shared);
    let _ = batcher_task.await;
    match first_error {
        Some(error) => Err(error),
        None => Ok(MinerReport {
            published,
            ack_p50_us,
            ack_p99_us,
        }),
    }
}

struct Publishers {
    topic: TopicLink,
    config: MinerConfig,
    output: Output,
    /// With `rate`: when the first job is due, and the time between two jobs.
    schedule: Option<(Instant, Duration)>,
    source: Mutex<JobSource>,
    /// Jobs that publishers have started on, to stop at exactly `count`.
    claimed: AtomicU64,
    published: AtomicU64,
    /// Time from sending a job until its acknowledgement, in microseconds.
    acknowledged_in: Mutex<Histogram<u64>>,
    shutdown: CancellationToken,
}

impl Publishers {
    async fn publish_loop(&self) -> Result<(), MinerError> {
        let mut ticks = tokio::time::interval(self.config.interval.max(Duration::from_nanos(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.schedule.is_none() && !self.config.interval.is_zero() {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    _ = ticks.tick() => {}
                }
            }
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let claimed = self.claimed.fetch_add(1, Ordering::Relaxed);
            if self.config.count.is_some_and(|count| claimed >= count) {
                return Ok(());
            }
            if let Some((first, period)) = self.schedule {
                // Job k is due at first + k periods whichever publisher sends it, so a late job
                // is sent at once and the average rate holds even with a coarse timer.
                let due = first + period.saturating_mul(claimed.min(u32::MAX as u64) as u32);
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep_until(due.into()) => {}
                }
            }
            let job = self.source.lock().next_job();
            let sent = Instant::now();
            let Some(job_id) = self.topic.publish(job, &self.shutdown).await? else {
                return Ok(());
            };
            self.acknowledged_in
                .lock()
                .saturating_record(sent.elapsed().as_micros() as u64);
            self.published.fetch_add(1, Ordering::Relaxed);
            self.output.published(job, self.topic.name(), job_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::{ProgressDrawTarget, TermLike};

    #[test]
    fn the_rate_is_rounded_to_whole_jobs_a_second_with_tenths_below_ten() {
        assert_eq!(rounded_rate(66.3832), "66/s");
        assert_eq!(rounded_rate(1234.5678), "1235/s");
        assert_eq!(rounded_rate(9.96), "10/s");
        assert_eq!(rounded_rate(3.24), "3.2/s");
        assert_eq!(rounded_rate(0.0), "0.0/s");
        assert_eq!(rounded_rate(f64::INFINITY), "-/s");
    }

    /// What the bar's terminal and the logs did, in order.
    #[derive(Clone, Debug, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        fn note(&self, what: String) {
            self.0.lock().push(what);
        }

        fn seen(&self) -> Vec<String> {
            self.0.lock().clone()
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, line: &str) -> std::io::Result<()> {
            self.write_str(line)
        }
        fn write_str(&self, text: &str) -> std::io::Result<()> {
            if text.contains("jobs") {
                self.note(format!("bar: {}", text.trim_end()));
            }
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.note("clear".to_owned());
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A subscriber that notes each event's message on the screen.
    struct Logs(Screen);

    impl tracing::Subscriber for Logs {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            self.0.note(format!("log: {}", event.metadata().name()));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn a_log_line_is_written_while_the_bar_is_cleared_and_the_bar_is_drawn_again_below() {
        let screen = Screen::default();
        let bar = ProgressBar::with_draw_target(
            Some(50),
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_style(progress_style());
        bar.inc(10);
        let logs = tracing::Dispatch::new(Logs(screen.clone()));
        let output = tracing::dispatcher::with_default(&logs, || Output::Progress(bar).logs());
        let above_the_bar = output.expect("a progress bar has its own logs");
        tracing::dispatcher::with_default(&above_the_bar, || {
            tracing::info!(name: "topic full", "topic full; still waiting for room");
        });
        let seen = screen.seen();
        let logged = seen
            .iter()
            .position(|what| what == "log: topic full")
            .unwrap_or_else(|| panic!("the event reached the logs: {seen:?}"));
        let drawn = |what: &String| what.starts_with("bar: ") && what.contains("10/50 jobs");
        let before = &seen[..logged];
        let after = &seen[logged + 1..];
        assert!(before.iter().any(drawn), "drawn before: {seen:?}");
        assert_eq!(
            before.last().map(String::as_str),
            Some("clear"),
            "cleared just before the log line: {seen:?}"
        );
        assert!(after.iter().any(drawn), "drawn again after: {seen:?}");
    }
}
