//! The broker's HTTP side (`--http`, default 127.0.0.1:8081): `/metrics` for Prometheus,
//! `/api/stats` (the JSON of `broker stats --json`) and `/`, a live dashboard page.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use stubs::BrokerStats;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::TopicLabels;
use crate::queue::JobStore;
use crate::requests::Broker;

/// The dashboard: one HTML file with its script, built into the binary; it polls `/api/stats`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Where the HTTP side listens by default.
pub const DEFAULT_HTTP_ADDRESS: &str = "127.0.0.1:8081";

/// Serves the HTTP side on `listener` until `shutdown` is cancelled.
pub async fn serve<S: JobStore>(
    broker: Arc<Broker<S>>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(dashboard))
        .route("/api/stats", get(api_stats::<S>))
        .route("/metrics", get(metrics::<S>))
        .with_state(broker);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn api_stats<S: JobStore>(State(broker): State<Arc<Broker<S>>>) -> Json<BrokerStats> {
    Json(broker.stats().await)
}

async fn metrics<S: JobStore>(State(broker): State<Arc<Broker<S>>>) -> impl IntoResponse {
    let text = prometheus_text(&broker.stats().await, broker.latency_histograms());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// A per-topic metric: its name, its help text and how to read it from a topic's report.
type TopicFigure = (&'static str, &'static str, fn(&stubs::TopicReport) -> u64);

/// The figures in the Prometheus (OpenMetrics) text format: counters and gauges per topic and per
/// subscriber, read from `stats` at each scrape, and the latency histograms kept as jobs complete.
pub fn prometheus_text(stats: &BrokerStats, latency: crate::metrics::LatencyHistograms) -> String {
    let mut registry = Registry::with_prefix("pairbroker");
    let topic_gauges: [TopicFigure; 5] = [
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
    for (name, help, value) in topic_gauges {
        let family = Family::<TopicLabels, Gauge>::default();
        for topic in &stats.topics {
            family
                .get_or_create(&vec![("topic".to_owned(), topic.name.clone())])
                .set(value(topic) as i64);
        }
        registry.register(name, help, family);
    }
    let topic_counters: [TopicFigure; 5] = [
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
    for (name, help, value) in topic_counters {
        let family = Family::<TopicLabels, Counter>::default();
        for topic in &stats.topics {
            family
                .get_or_create(&vec![("topic".to_owned(), topic.name.clone())])
                .inc_by(value(topic));
        }
        registry.register(name, help, family);
    }
    let in_flight = Family::<TopicLabels, Gauge>::default();
    let completed = Family::<TopicLabels, Counter>::default();
    let failed = Family::<TopicLabels, Counter>::default();
    for subscriber in &stats.subscribers {
        let labels = vec![
            ("topic".to_owned(), subscriber.topic.clone()),
            ("subscriber".to_owned(), subscriber.address.clone()),
            ("callback".to_owned(), subscriber.callback.clone()),
            ("protocol".to_owned(), subscriber.protocol.name().to_owned()),
        ];
        in_flight
            .get_or_create(&labels)
            .set(subscriber.in_flight as i64);
        completed
            .get_or_create(&labels)
            .inc_by(subscriber.completed);
        failed.get_or_create(&labels).inc_by(subscriber.failed);
    }
    registry.register(
        "subscriber_in_flight",
        "Calls in flight to a subscriber",
        in_flight,
    );
    registry.register(
        "subscriber_jobs_completed",
        "Jobs a subscriber completed",
        completed,
    );
    registry.register("subscriber_jobs_failed", "Jobs a subscriber failed", failed);
    registry.register(
        "job_latency_seconds",
        "Time from publish to completion",
        latency,
    );
    let uptime = Gauge::<i64>::default();
    uptime.set(stats.uptime_s as i64);
    registry.register("uptime_seconds", "Seconds since the broker started", uptime);
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}
