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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lab_console::Console;
use stubs::{BrokerError, Job};
use tokio_util::sync::CancellationToken;
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
    #[error("cannot reach broker at {address} ({cause}): is 'cargo run -p broker' running?", address = .0.address(), cause = .0.cause())]
    BrokerUnreachable(#[source] ConnectError),
    /// The broker went away and did not come back in time, or stopped answering.
    #[error("lost the broker while trying to {action}: {error}; is it still running (cargo run -p broker)?")]
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
    /// A progress bar with rate and ETA, for `--count` on a terminal.
    Progress(indicatif::ProgressBar),
    /// Nothing per job: for load, where even a buffered line per job costs more than a publish.
    Quiet,
}

impl Output {
    /// A progress bar for `count` jobs on standard error.
    pub fn progress_bar(count: u64) -> Self {
        let bar = indicatif::ProgressBar::new(count);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} jobs  {per_sec}  ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Self::Progress(bar)
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

/// Creates the topic and publishes until the count is reached or `shutdown` is cancelled.
/// Publishes in flight when `shutdown` comes are finished first.
pub async fn run(
    config: MinerConfig,
    output: impl Into<Output>,
    shutdown: CancellationToken,
) -> Result<MinerReport, MinerError> {
    let output = output.into();
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
    let (topic, batcher_task) =
        TopicLink::open(&config.link, &config.topic, config.buffer, &shutdown).await?;
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
        publishers.spawn(async move { shared.publish_loop().await });
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
        let acknowledged_in = lock(&shared.acknowledged_in);
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
            let job = lock(&self.source).next_job();
            let sent = Instant::now();
            let Some(job_id) = self.topic.publish(job, &self.shutdown).await? else {
                return Ok(());
            };
            lock(&self.acknowledged_in).saturating_record(sent.elapsed().as_micros() as u64);
            self.published.fetch_add(1, Ordering::Relaxed);
            self.output.published(job, self.topic.name(), job_id);
        }
    }
}
