//! Figures the broker keeps beside its store, for `stats`: latency from publish to completion
//! and the completion rate per topic, and each subscription's counters; and, for `/metrics`,
//! what the operating system reports of the broker's process.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram as PrometheusHistogram;
use stubs::Latency;

/// The longest latency the histograms tell apart: an hour, in microseconds. Longer ones are
/// counted as an hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant figures of the latency histograms: 1 % precision in about 26 KiB a topic.
const LATENCY_PRECISION: u8 = 2;
/// The window of the completion rate, in whole seconds.
pub const RATE_WINDOW_S: u64 = 10;

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// One topic's latency histogram and completion rate.
#[derive(Debug)]
pub struct TopicMetrics {
    latency_us: Mutex<Histogram<u64>>,
    /// Completions per second, one slot per second of the window plus the current one,
    /// each tagged with its second so that a stale slot is recognised and reset.
    completions: Mutex<[(u64, u64); RATE_WINDOW_S as usize + 1]>,
    /// The same latencies, for Prometheus, in seconds.
    prometheus_latency: PrometheusHistogram,
}

impl Default for TopicMetrics {
    fn default() -> Self {
        Self {
            latency_us: Mutex::new(
                Histogram::new_with_bounds(1, MAX_LATENCY_US, LATENCY_PRECISION)
                    .expect("the bounds are constants that hdrhistogram accepts"),
            ),
            completions: Mutex::new([(0, 0); RATE_WINDOW_S as usize + 1]),
            prometheus_latency: latency_buckets(),
        }
    }
}

impl TopicMetrics {
    /// Counts a completion of a job published at `published_at`.
    pub fn record_completion(&self, published_at: SystemTime) {
        let now = SystemTime::now();
        let latency = now
            .duration_since(published_at)
            .map_or(0, |latency| latency.as_micros() as u64);
        self.latency_us.lock().saturating_record(latency.max(1));
        self.prometheus_latency.observe(latency as f64 / 1e6);
        let second = unix_seconds(now);
        let mut completions = self.completions.lock();
        let slot = &mut completions[(second % (RATE_WINDOW_S + 1)) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += 1;
    }

    /// The median and 99th percentile since the broker started.
    pub fn latency(&self) -> Latency {
        let histogram = self.latency_us.lock();
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: histogram.value_at_quantile(0.5),
            p99: histogram.value_at_quantile(0.99),
        }
    }

    /// Completions per second over the last [`RATE_WINDOW_S`] whole seconds.
    pub fn rate_per_s(&self) -> f64 {
        let now = unix_seconds(SystemTime::now());
        let completed: u64 = self
            .completions
            .lock()
            .iter()
            .filter(|(second, _)| *second < now && now - second <= RATE_WINDOW_S)
            .map(|(_, count)| count)
            .sum();
        completed as f64 / RATE_WINDOW_S as f64
    }
}

/// The Prometheus latency histogram of every topic, in seconds, by topic name.
pub type LatencyHistograms = Vec<(Arc<str>, PrometheusHistogram)>;

/// The first latency bucket's bound, in microseconds.
const FIRST_BUCKET_US: f64 = 20.0;
/// Each latency bucket's bound is about this many times the one before.
const BUCKET_GROWTH: f64 = 1.5;
/// Latency buckets besides `+Inf`: from 20 µs to 5.8 s, fine enough to draw a latency
/// histogram of a loopback run (the benchmark runner reads them), 33 series a topic.
const LATENCY_BUCKETS: i32 = 32;

/// The latency buckets' bounds, in seconds. Each is a whole number of microseconds rounded to two
/// significant digits, so that it is written as the short decimal it is (`0.000068`) and not as
/// the float noise of a repeated product (`0.000030000000000000005`): a bound is part of its
/// series' identity, and scrapers and charts show it.
fn latency_bucket_bounds() -> impl Iterator<Item = f64> {
    (0..LATENCY_BUCKETS).map(|i| {
        let us = FIRST_BUCKET_US * BUCKET_GROWTH.powi(i);
        let step = 10f64.powi(us.log10().floor() as i32 - 1);
        // A whole number of microseconds divided once: the nearest float to the decimal.
        ((us / step).round() * step) / 1e6
    })
}

fn latency_buckets() -> PrometheusHistogram {
    PrometheusHistogram::new(latency_bucket_bounds())
}

/// The topics' metrics, made on first use.
#[derive(Debug, Default)]
pub struct Metrics {
    topics: Mutex<HashMap<Arc<str>, Arc<TopicMetrics>>>,
}

impl Metrics {
    /// The metrics of `topic`.
    pub fn topic(&self, topic: &str) -> Arc<TopicMetrics> {
        let mut topics = self.topics.lock();
        if let Some(metrics) = topics.get(topic) {
            return metrics.clone();
        }
        let metrics = Arc::new(TopicMetrics::default());
        topics.insert(Arc::from(topic), metrics.clone());
        metrics
    }

    /// The metrics of `topic` if it has any yet: reading figures makes none.
    pub fn existing(&self, topic: &str) -> Option<Arc<TopicMetrics>> {
        self.topics.lock().get(topic).cloned()
    }

    /// The latency histograms of every topic, for `/metrics`, in the order of the topics' names
    /// so that a scrape lists its series as the one before did.
    pub fn prometheus_latency(&self) -> LatencyHistograms {
        let mut histograms: LatencyHistograms = self
            .topics
            .lock()
            .iter()
            .map(|(topic, metrics)| (topic.clone(), metrics.prometheus_latency.clone()))
            .collect();
        histograms.sort_by(|a, b| a.0.cmp(&b.0));
        histograms
    }
}

/// One subscription's counters, updated by its dispatcher.
#[derive(Debug)]
pub struct SubscriberMetrics {
    /// Calls allowed in flight.
    pub prefetch: u32,
    /// How the factory is reached.
    pub protocol: stubs::Protocol,
    /// When it subscribed.
    pub connected_since: SystemTime,
    /// Calls in flight now.
    pub in_flight: AtomicU64,
    /// Jobs completed.
    pub completed: AtomicU64,
    /// Jobs failed with a job error.
    pub failed: AtomicU64,
}

impl SubscriberMetrics {
    /// Counters for a subscription made now.
    pub fn new(prefetch: u32, protocol: stubs::Protocol) -> Self {
        Self {
            prefetch,
            protocol,
            connected_since: SystemTime::now(),
            in_flight: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// When it subscribed, in seconds since the Unix epoch.
    pub fn connected_since_unix_s(&self) -> u64 {
        unix_seconds(self.connected_since)
    }
}

/// What the operating system reports of the broker's process, for `/metrics`'s `process_*`
/// families, named as Prometheus's own clients name them so that dashboards made for those work.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessFigures {
    /// CPU time spent, in user and system mode together, in seconds.
    pub cpu_seconds: f64,
    /// Memory resident in RAM.
    pub resident_memory_bytes: u64,
    /// Virtual memory mapped.
    pub virtual_memory_bytes: u64,
    /// File descriptors open.
    pub open_fds: u64,
    /// The soft limit on open file descriptors; `None` when unlimited.
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_unix_s: f64,
}

/// Clock ticks a second in /proc's CPU and start times (the kernel's `USER_HZ`): 100 on every
/// architecture Linux runs on. Asking `sysconf` would need unsafe code for a constant;
/// Prometheus's own reader of /proc takes it as a constant too.
#[cfg(target_os = "linux")]
const USER_HZ: f64 = 100.0;

impl ProcessFigures {
    /// This process's figures, read from /proc/self; `None` if /proc cannot be read.
    #[cfg(target_os = "linux")]
    pub fn of_this_process() -> Option<Self> {
        let read = |path| std::fs::read_to_string(path).ok();
        let stat = ProcStat::parse(&read("/proc/self/stat")?)?;
        let boot_time_unix_s = field_after(&read("/proc/stat")?, "btime")?;
        let resident_kib = field_after(&read("/proc/self/status")?, "VmRSS:")?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds =
            read("/proc/self/limits").and_then(|limits| field_after(&limits, "Max open files"));
        Some(Self {
            cpu_seconds: (stat.user_ticks + stat.system_ticks) as f64 / USER_HZ,
            resident_memory_bytes: resident_kib * 1024,
            virtual_memory_bytes: stat.virtual_memory_bytes,
            open_fds,
            max_fds,
            start_time_unix_s: boot_time_unix_s as f64 + stat.start_ticks as f64 / USER_HZ,
        })
    }

    /// Elsewhere than on Linux there is no /proc to read, and the `process_*` families are left
    /// out rather than made up.
    #[cfg(not(target_os = "linux"))]
    pub fn of_this_process() -> Option<Self> {
        None
    }
}

/// The fields of /proc/self/stat that [`ProcessFigures`] needs.
#[cfg(target_os = "linux")]
#[derive(Debug, PartialEq)]
struct ProcStat {
    user_ticks: u64,
    system_ticks: u64,
    /// Since the machine booted.
    start_ticks: u64,
    virtual_memory_bytes: u64,
}

#[cfg(target_os = "linux")]
impl ProcStat {
    /// Reads `pid (comm) state ppid …`: the fields are counted after the command's closing
    /// parenthesis, the last one on the line, since the command may hold spaces and parentheses.
    fn parse(stat: &str) -> Option<Self> {
        let (_, after_command) = stat.rsplit_once(')')?;
        // Field 3 of proc(5), the state, comes first.
        let fields: Vec<&str> = after_command.split_whitespace().collect();
        let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
        Some(Self {
            user_ticks: field(14)?,
            system_ticks: field(15)?,
            start_ticks: field(22)?,
            virtual_memory_bytes: field(23)?,
        })
    }
}

/// The number after `key` on the line of `text` that starts with it (`btime 1700000000`,
/// `VmRSS:   1234 kB`, `Max open files   1024   524288   files`: the soft limit); `None` if
/// that is no number (`unlimited`).
#[cfg(target_os = "linux")]
fn field_after(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_percentiles_come_from_publish_times() {
        let metrics = TopicMetrics::default();
        assert_eq!(metrics.latency(), Latency::default());
        let now = SystemTime::now();
        for ms in 1..=100 {
            metrics.record_completion(now - Duration::from_millis(ms));
        }
        let latency = metrics.latency();
        assert!((49_000..=52_000).contains(&latency.p50), "{latency:?}");
        assert!((98_000..=101_500).contains(&latency.p99), "{latency:?}");
    }

    #[test]
    fn the_rate_counts_whole_past_seconds_only() {
        let metrics = TopicMetrics::default();
        let now = unix_seconds(SystemTime::now());
        {
            let mut completions = metrics.completions.lock();
            completions[((now - 1) % (RATE_WINDOW_S + 1)) as usize] = (now - 1, 30);
            completions[((now - 5) % (RATE_WINDOW_S + 1)) as usize] = (now - 5, 20);
            // Too old, and the current second: left out.
            completions[((now - 20) % (RATE_WINDOW_S + 1)) as usize] = (now - 20, 1_000);
            completions[(now % (RATE_WINDOW_S + 1)) as usize] = (now, 1_000);
        }
        // The test may straddle a second boundary; then the figure shifts by at most one slot.
        let rate = metrics.rate_per_s();
        assert!(rate == 5.0 || rate == 105.0, "{rate}");
    }

    #[test]
    fn latency_bounds_are_short_decimals_that_grow() {
        let bounds: Vec<f64> = latency_bucket_bounds().collect();
        assert_eq!(bounds.len(), LATENCY_BUCKETS as usize);
        assert_eq!(
            (bounds[0], bounds[1], bounds[2], bounds[3]),
            (0.00002, 0.00003, 0.000045, 0.000068)
        );
        assert_eq!(bounds.last(), Some(&5.8));
        for pair in bounds.windows(2) {
            let growth = pair[1] / pair[0];
            assert!((1.4..=1.6).contains(&growth), "{pair:?}");
        }
        for bound in bounds {
            let digits = format!("{bound:e}");
            let mantissa = digits.split('e').next().unwrap();
            assert!(mantissa.len() <= 3, "{bound} is written {digits}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn proc_stat_fields_are_counted_after_the_command() {
        // A command with a space and a parenthesis in it, as a process may name itself.
        let stat = "4242 (broker (x) y) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                    250 75 0 0 20 0 3 0 123456 987654321 2048 18446744073709551615";
        assert_eq!(
            ProcStat::parse(stat),
            Some(ProcStat {
                user_ticks: 250,
                system_ticks: 75,
                start_ticks: 123456,
                virtual_memory_bytes: 987654321,
            })
        );
        assert_eq!(ProcStat::parse("4242 (broker) S 1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn status_stat_and_limits_lines_are_read_by_key() {
        let status = "Name:\tbroker\nVmSize:\t  964516 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(field_after(status, "VmRSS:"), Some(10240));
        assert_eq!(
            field_after("cpu 1 2 3\nbtime 1700000000\n", "btime"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n\
                      Max locked memory         unlimited            unlimited            bytes     \n";
        assert_eq!(field_after(limits, "Max open files"), Some(1024));
        assert_eq!(field_after(limits, "Max locked memory"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_figures_on_linux() {
        let figures = ProcessFigures::of_this_process().expect("/proc/self is readable");
        assert!(figures.resident_memory_bytes > 0, "{figures:?}");
        assert!(
            figures.virtual_memory_bytes >= figures.resident_memory_bytes,
            "{figures:?}"
        );
        assert!(figures.open_fds > 0, "{figures:?}");
        let now = unix_seconds(SystemTime::now()) as f64;
        assert!(figures.start_time_unix_s <= now + 1.0, "{figures:?}");
        assert!(
            figures.start_time_unix_s > now - 24.0 * 3600.0,
            "{figures:?}"
        );
    }
}
