//! Figures the broker keeps beside its store, for `stats`: latency from publish to completion
//! and the completion rate per topic, and each subscription's counters.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{
    exponential_buckets, Histogram as PrometheusHistogram,
};
use stubs::Latency;

/// The longest latency the histograms tell apart: an hour, in microseconds. Longer ones are
/// counted as an hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant figures of the latency histograms: 1 % precision in about 26 KiB a topic.
const LATENCY_PRECISION: u8 = 2;
/// The window of the completion rate, in whole seconds.
pub const RATE_WINDOW_S: u64 = 10;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
        lock(&self.latency_us).saturating_record(latency.max(1));
        self.prometheus_latency.observe(latency as f64 / 1e6);
        let second = unix_seconds(now);
        let mut completions = lock(&self.completions);
        let slot = &mut completions[(second % (RATE_WINDOW_S + 1)) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += 1;
    }

    /// The median and 99th percentile since the broker started.
    pub fn latency(&self) -> Latency {
        let histogram = lock(&self.latency_us);
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
        let completed: u64 = lock(&self.completions)
            .iter()
            .filter(|(second, _)| *second < now && now - second <= RATE_WINDOW_S)
            .map(|(_, count)| count)
            .sum();
        completed as f64 / RATE_WINDOW_S as f64
    }
}

/// The labels of a per-topic Prometheus metric.
pub type TopicLabels = Vec<(String, String)>;

/// The Prometheus latency histogram of every topic, in seconds.
pub type LatencyHistograms = Family<TopicLabels, PrometheusHistogram, fn() -> PrometheusHistogram>;

/// Buckets from 20 µs growing by half to about 5.8 s: fine enough to draw a latency
/// histogram of a loopback run (the benchmark runner reads them), 33 series a topic.
fn latency_buckets() -> PrometheusHistogram {
    PrometheusHistogram::new(exponential_buckets(0.000_02, 1.5, 32))
}

/// The topics' metrics, made on first use.
#[derive(Debug)]
pub struct Metrics {
    topics: Mutex<HashMap<Arc<str>, Arc<TopicMetrics>>>,
    prometheus_latency: LatencyHistograms,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            topics: Mutex::default(),
            prometheus_latency: Family::new_with_constructor(latency_buckets),
        }
    }
}

impl Metrics {
    /// The metrics of `topic`.
    pub fn topic(&self, topic: &str) -> Arc<TopicMetrics> {
        let mut topics = lock(&self.topics);
        if let Some(metrics) = topics.get(topic) {
            return metrics.clone();
        }
        let metrics = Arc::new(TopicMetrics {
            prometheus_latency: self
                .prometheus_latency
                .get_or_create(&vec![("topic".to_owned(), topic.to_owned())])
                .clone(),
            ..TopicMetrics::default()
        });
        topics.insert(Arc::from(topic), metrics.clone());
        metrics
    }

    /// The metrics of `topic` if it has any yet: reading figures makes none.
    pub fn existing(&self, topic: &str) -> Option<Arc<TopicMetrics>> {
        lock(&self.topics).get(topic).cloned()
    }

    /// The latency histograms of every topic, for `/metrics`.
    pub fn prometheus_latency(&self) -> LatencyHistograms {
        self.prometheus_latency.clone()
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
            let mut completions = lock(&metrics.completions);
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
}
