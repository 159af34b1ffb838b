//! The broker's HTTP side (`--http`, default 127.0.0.1:8081): `/metrics` for Prometheus,
//! `/api/stats` (the JSON of `broker stats --json`), `/api/dead-letters` (that of
//! `broker dead-letters --json`) and `/`, a live dashboard page.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, text, DescriptorEncoder, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use stubs::{BrokerStats, SubscriberReport, TopicReport};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{LatencyHistograms, ProcessFigures};
use crate::requests::BrokerState;

/// The dashboard: one HTML file with its script, built into the binary; it polls `/api/stats`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Where the HTTP side listens by default.
pub const DEFAULT_HTTP_ADDRESS: &str = "127.0.0.1:8081";

/// Serves the HTTP side on `listener` until `shutdown` is cancelled.
pub async fn serve(
    broker: Arc<BrokerState>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(dashboard))
        .route("/api/stats", get(api_stats))
        .route("/metrics", get(metrics))
        // The dashboard's dead letters: the JSON of `broker dead-letters --json`, built in
        // the stats module beside the command so that the two cannot drift apart.
        .route("/api/dead-letters", get(crate::stats::api_dead_letters))
        .with_state(broker);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn api_stats(State(broker): State<Arc<BrokerState>>) -> Json<BrokerStats> {
    Json(broker.stats().await)
}

async fn metrics(State(broker): State<Arc<BrokerState>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok());
    let format = Format::asked_for(accept);
    let scrape = Scrape {
        stats: broker.stats().await,
        latency: broker.latency_histograms(),
        process: ProcessFigures::of_this_process(),
    };
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            // The same address answers in two formats: a cache must not serve one for the other.
            (header::VARY, "Accept"),
        ],
        scrape.text(format),
    )
}

/// The two text formats of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus's classic text format, version 0.0.4: what every scraper and `promtool check
    /// metrics` read, so it is the answer unless OpenMetrics is asked for.
    Prometheus,
    /// OpenMetrics 1.0 text, for a scraper that prefers it (Prometheus does, by default).
    OpenMetrics,
}

/// The media type of OpenMetrics text, as an `Accept` header names it.
const OPENMETRICS_MEDIA_TYPE: &str = "application/openmetrics-text";
/// The media type of the classic text format.
const PROMETHEUS_MEDIA_TYPE: &str = "text/plain";

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics if it names OpenMetrics with a higher
    /// quality than the classic text format; the classic format otherwise, wildcards and a
    /// missing header included.
    pub fn asked_for(accept: Option<&str>) -> Self {
        let (mut openmetrics, mut prometheus) = (0.0f32, 0.0f32);
        for range in accept.unwrap_or_default().split(',') {
            let mut parameters = range.split(';').map(str::trim);
            let media_type = parameters.next().unwrap_or_default();
            let quality = parameters
                .filter_map(|parameter| parameter.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, value)| value.trim().parse::<f32>().ok());
            // A range whose quality cannot be read is left out, as if it were not there.
            let Some(quality) = quality else { continue };
            if media_type.eq_ignore_ascii_case(OPENMETRICS_MEDIA_TYPE) {
                openmetrics = openmetrics.max(quality);
            } else if media_type.eq_ignore_ascii_case(PROMETHEUS_MEDIA_TYPE) {
                prometheus = prometheus.max(quality);
            }
        }
        if openmetrics > prometheus {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// What one scrape of `/metrics` shows.
#[derive(Debug)]
pub struct Scrape {
    /// The broker's figures, per topic and per subscriber.
    pub stats: BrokerStats,
    /// The latency histograms, kept as jobs complete.
    pub latency: LatencyHistograms,
    /// The process's figures, where the operating system gives them.
    pub process: Option<ProcessFigures>,
}

impl Scrape {
    /// The scrape as text in `format`. The families are described once, as a collector, and
    /// `prometheus_client`'s encoder of each format writes them with that format's rules: the
    /// classic one names counters' HELP and TYPE with `_total` and has no `# UNIT` or `# EOF`.
    pub fn text(self, format: Format) -> String {
        let mut registry = Registry::default();
        if let Some(process) = self.process {
            registry.register_collector(Box::new(ProcessFamilies(process)));
        }
        registry
            .sub_registry_with_prefix("pairbroker")
            .register_collector(Box::new(BrokerFamilies {
                stats: self.stats,
                latency: self.latency,
            }));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = match format {
            Format::Prometheus => prometheus_text::encode(&mut text, &registry),
            Format::OpenMetrics => text::encode(&mut text, &registry),
        };
        text
    }
}

/// A per-topic figure: its name, its help text and how to read it from a topic's report.
type TopicFigure = (&'static str, &'static str, fn(&TopicReport) -> u64);

/// The gauges of each topic.
const TOPIC_GAUGES: [TopicFigure; 5] = [
    (
        "topic_capacity",
        "Ready jobs a topic holds before a publish waits",
        |t| t.capacity,
    ),
    ("topic_ready", "Jobs waiting to be taken", |t| t.ready),
    ("topic_in_flight", "Jobs taken and not yet settled", |t| {
        t.in_flight
    }),
    ("topic_dead_letters", "Dead letters kept", |t| t.dead),
    ("topic_subscribers", "Subscriptions in force", |t| {
        t.subscribers
    }),
];

/// The counters of each topic; their names get `_total`.
const TOPIC_COUNTERS: [TopicFigure; 5] = [
    ("jobs_published", "Jobs published", |t| t.published),
    ("jobs_completed", "Jobs completed", |t| t.completed),
    (
        "jobs_failed",
        "Jobs dead-lettered: failed with a job error, or undeliverable",
        |t| t.failed,
    ),
    ("jobs_requeued", "Jobs put back after a failed call", |t| {
        t.requeued
    }),
    (
        "jobs_undeliverable",
        "Jobs dead-lettered because every call that carried them failed, up to the delivery limit",
        |t| t.undeliverable,
    ),
];

/// The broker's own families, each series in the order of its topic, then its subscriber: a
/// scrape reads like the one before, and a diff of two shows what changed.
#[derive(Debug)]
struct BrokerFamilies {
    stats: BrokerStats,
    latency: LatencyHistograms,
}

impl Collector for BrokerFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.encode_topics(&mut encoder)?;
        self.encode_subscribers(&mut encoder)?;
        self.encode_latency_uptime_and_build(&mut encoder)
    }
}

impl BrokerFamilies {
    fn encode_topics(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut topics: Vec<&TopicReport> = self.stats.topics.iter().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let labels = |topic: &TopicReport| [("topic", topic.name.clone())];
        for (name, help, value) in TOPIC_GAUGES {
            let series = topics
                .iter()
                .map(|t| (labels(t), ConstGauge::new(value(t) as i64)));
            family(encoder, name, help, None, series)?;
        }
        for (name, help, value) in TOPIC_COUNTERS {
            let series = topics
                .iter()
                .map(|t| (labels(t), ConstCounter::new(value(t))));
            family(encoder, name, help, None, series)?;
        }
        Ok(())
    }

    fn encode_subscribers(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut subscribers: Vec<&SubscriberReport> = self.stats.subscribers.iter().collect();
        subscribers.sort_by(|a, b| {
            (&a.topic, &a.address, &a.callback).cmp(&(&b.topic, &b.address, &b.callback))
        });
        let labels = |s: &SubscriberReport| {
            [
                ("topic", s.topic.clone()),
                ("subscriber", s.address.clone()),
                ("callback", s.callback.clone()),
                ("protocol", s.protocol.name().to_owned()),
            ]
        };
        let in_flight = subscribers
            .iter()
            .map(|s| (labels(s), ConstGauge::new(s.in_flight as i64)));
        let help = "Calls in flight to a subscriber";
        family(encoder, "subscriber_in_flight", help, None, in_flight)?;
        let completed = subscribers
            .iter()
            .map(|s| (labels(s), ConstCounter::new(s.completed)));
        let help = "Jobs a subscriber completed";
        family(encoder, "subscriber_jobs_completed", help, None, completed)?;
        let failed = subscribers
            .iter()
            .map(|s| (labels(s), ConstCounter::new(s.failed)));
        let help = "Jobs a subscriber failed";
        family(encoder, "subscriber_jobs_failed", help, None, failed)
    }

    fn encode_latency_uptime_and_build(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let seconds = Some(&Unit::Seconds);
        // Already in the order of their topics.
        let latency = self
            .latency
            .iter()
            .map(|(topic, histogram)| ([("topic", topic.to_string())], histogram.clone()));
        let help = "Time from publish to completion";
        family(encoder, "job_latency", help, seconds, latency)?;
        let uptime = [(NO_LABELS, ConstGauge::new(self.stats.uptime_s as i64))];
        let help = "Seconds since the broker started";
        family(encoder, "uptime", help, seconds, uptime)?;
        let build = [(
            NO_LABELS,
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        )];
        family(encoder, "build", "The broker's version", None, build)
    }
}

/// The `process_*` families, named and described as Prometheus's own clients do.
#[derive(Debug)]
struct ProcessFamilies(ProcessFigures);

impl Collector for ProcessFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let process = &self.0;
        let (seconds, bytes) = (Some(&Unit::Seconds), Some(&Unit::Bytes));
        let gauge = |value: u64| [(NO_LABELS, ConstGauge::new(value as i64))];
        let cpu = [(NO_LABELS, ConstCounter::new(process.cpu_seconds))];
        let help = "Total user and system CPU time spent in seconds";
        family(&mut encoder, "process_cpu", help, seconds, cpu)?;
        let rss = gauge(process.resident_memory_bytes);
        let help = "Resident memory size in bytes";
        family(&mut encoder, "process_resident_memory", help, bytes, rss)?;
        let mapped = gauge(process.virtual_memory_bytes);
        let help = "Virtual memory size in bytes";
        family(&mut encoder, "process_virtual_memory", help, bytes, mapped)?;
        let open = gauge(process.open_fds);
        let help = "Number of open file descriptors";
        family(&mut encoder, "process_open_fds", help, None, open)?;
        // An unlimited soft limit has no number to show, and the family is left out.
        let max = process
            .max_fds
            .map(|max| (NO_LABELS, ConstGauge::new(max as i64)));
        let help = "Maximum number of open file descriptors";
        family(&mut encoder, "process_max_fds", help, None, max)?;
        let start = [(NO_LABELS, ConstGauge::new(process.start_time_unix_s))];
        let help = "Start time of the process since unix epoch in seconds";
        family(&mut encoder, "process_start_time", help, seconds, start)
    }
}

/// The label set of a family's only series.
const NO_LABELS: [(&str, &str); 0] = [];

/// Writes the family `name` with its series, each a label set and a metric; a family without
/// series is left out, as `prometheus_client` leaves out an empty family.
fn family<L, M>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (L, M)>,
) -> std::fmt::Result
where
    L: EncodeLabelSet,
    M: EncodeMetric,
{
    let mut series = series.into_iter().peekable();
    let Some((_, first)) = series.peek() else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, unit, first.metric_type())?;
    for (labels, metric) in series {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use stubs::{Latency, Protocol};

    #[test]
    fn the_classic_format_is_the_answer_unless_openmetrics_is_preferred() {
        use Format::{OpenMetrics, Prometheus};
        for (accept, format) in [
            (None, Prometheus),
            (Some(""), Prometheus),
            (Some("*/*"), Prometheus),
            (Some("text/plain"), Prometheus),
            (Some("application/openmetrics-text"), OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; version=1.0.0"),
                OpenMetrics,
            ),
            // Prometheus 2's default.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                OpenMetrics,
            ),
            (
                Some("text/plain;version=0.0.4, application/openmetrics-text;q=0.5"),
                Prometheus,
            ),
            (Some("application/openmetrics-text;q=0"), Prometheus),
            (Some("application/openmetrics-text;q=high"), Prometheus),
            (
                Some("text/plain;q=0.5, application/openmetrics-text;q=0.5"),
                Prometheus,
            ),
        ] {
            assert_eq!(Format::asked_for(accept), format, "{accept:?}");
        }
    }

    fn topic(name: &str) -> TopicReport {
        TopicReport {
            name: name.to_owned(),
            capacity: 10,
            ready: 1,
            in_flight: 2,
            published: 30,
            completed: 25,
            failed: 3,
            requeued: 4,
            undeliverable: 1,
            dead: 3,
            subscribers: 2,
            rate_per_s: 0.0,
            latency_us: Latency::default(),
            jetstream: None,
        }
    }

    fn subscriber(topic: &str, address: &str) -> SubscriberReport {
        SubscriberReport {
            topic: topic.to_owned(),
            address: address.to_owned(),
            callback: "Factory.Multiply".to_owned(),
            protocol: Protocol::Tarpc,
            prefetch: 4,
            in_flight: 1,
            completed: 12,
            failed: 1,
            connected_since_unix_s: 0,
        }
    }

    /// A scrape of topics and subscribers listed out of order, with latencies recorded.
    fn scrape(process: Option<ProcessFigures>) -> Scrape {
        let metrics = Metrics::default();
        for name in ["multiply", "divide"] {
            metrics
                .topic(name)
                .record_completion(std::time::SystemTime::now());
        }
        Scrape {
            stats: BrokerStats {
                topics: vec![topic("multiply"), topic("divide")],
                subscribers: vec![
                    subscriber("multiply", "127.0.0.1:9001"),
                    subscriber("divide", "127.0.0.1:9002"),
                    subscriber("divide", "127.0.0.1:9001"),
                ],
                uptime_s: 60,
            },
            latency: metrics.prometheus_latency(),
            process,
        }
    }

    const PROCESS: ProcessFigures = ProcessFigures {
        cpu_seconds: 1.25,
        resident_memory_bytes: 10 << 20,
        virtual_memory_bytes: 1 << 30,
        open_fds: 12,
        max_fds: Some(1024),
        start_time_unix_s: 1_700_000_000.5,
    };

    /// The label sets of family `name`'s samples, in the order written.
    fn series<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
        text.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
            .map(|labels| labels.split('}').next().unwrap_or_default())
            .collect()
    }

    #[test]
    fn series_come_in_order_of_topic_then_subscriber() {
        let text = scrape(None).text(Format::Prometheus);
        assert_eq!(
            series(&text, "pairbroker_topic_ready"),
            ["topic=\"divide\"", "topic=\"multiply\""]
        );
        let subscribers: Vec<String> = series(&text, "pairbroker_subscriber_jobs_completed_total")
            .iter()
            .map(|labels| labels.split(",callback").next().unwrap().to_owned())
            .collect();
        assert_eq!(
            subscribers,
            [
                "topic=\"divide\",subscriber=\"127.0.0.1:9001\"",
                "topic=\"divide\",subscriber=\"127.0.0.1:9002\"",
                "topic=\"multiply\",subscriber=\"127.0.0.1:9001\"",
            ]
        );
        let counts = series(&text, "pairbroker_job_latency_seconds_count");
        assert_eq!(counts, ["topic=\"divide\"", "topic=\"multiply\""]);
        assert_eq!(text, scrape(None).text(Format::Prometheus));
    }

    /// Asserts that each of `lines` stands in `text` as a whole line.
    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.lines().any(|l| l == *line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn the_classic_format_names_every_family_and_has_no_openmetrics_lines() {
        let text = scrape(Some(PROCESS)).text(Format::Prometheus);
        assert_lines(
            &text,
            &[
                "# TYPE process_cpu_seconds_total counter",
                "# TYPE process_resident_memory_bytes gauge",
                "# TYPE process_virtual_memory_bytes gauge",
                "# TYPE process_open_fds gauge",
                "# TYPE process_max_fds gauge",
                "# TYPE process_start_time_seconds gauge",
                "# TYPE pairbroker_topic_capacity gauge",
                "# TYPE pairbroker_jobs_published_total counter",
                "# TYPE pairbroker_subscriber_in_flight gauge",
                "# TYPE pairbroker_subscriber_jobs_failed_total counter",
                "# TYPE pairbroker_job_latency_seconds histogram",
                "# TYPE pairbroker_uptime_seconds gauge",
                "# TYPE pairbroker_build_info gauge",
            ],
        );
        // Every sample's family has its HELP and TYPE lines, just before its first sample.
        let mut described = None;
        for line in text.lines() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                described = help.split(' ').next();
            } else if !line.starts_with('#') {
                let family = described.unwrap_or_else(|| panic!("{line} has no HELP"));
                assert!(line.starts_with(family), "{line} after HELP of {family}");
                assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
            }
        }
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert_lines(
            &text,
            &[
                "process_cpu_seconds_total 1.25",
                "process_max_fds 1024",
                "process_start_time_seconds 1700000000.5",
                "pairbroker_jobs_published_total{topic=\"divide\"} 30",
                "pairbroker_uptime_seconds 60",
                &format!(
                    "pairbroker_build_info{{version=\"{}\"}} 1",
                    env!("CARGO_PKG_VERSION")
                ),
            ],
        );
    }

    #[test]
    fn openmetrics_has_units_and_ends_with_eof() {
        let text = scrape(Some(PROCESS)).text(Format::OpenMetrics);
        assert_lines(
            &text,
            &[
                "# TYPE process_cpu_seconds counter",
                "# UNIT process_cpu_seconds seconds",
                "process_cpu_seconds_total 1.25",
                "# TYPE pairbroker_jobs_published counter",
                "pairbroker_jobs_published_total{topic=\"divide\"} 30",
                "# UNIT pairbroker_job_latency_seconds seconds",
                "# TYPE pairbroker_build info",
            ],
        );
        assert!(text.ends_with("\n# EOF\n"), "{text}");
    }

    #[test]
    fn bucket_bounds_are_written_without_float_noise() {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let text = scrape(None).text(format);
            let bounds: Vec<&str> = text
                .lines()
                .filter_map(|line| line.split("le=\"").nth(1)?.split('"').next())
                .collect();
            assert_eq!(bounds.len(), 2 * 33, "{text}");
            for bound in bounds {
                assert!(bound.len() <= 8, "le=\"{bound}\" in {format:?}");
            }
        }
    }

    #[test]
    fn process_families_are_left_out_without_figures() {
        let text = scrape(None).text(Format::Prometheus);
        assert!(!text.contains("process_"), "{text}");
    }
}
