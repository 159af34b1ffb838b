//! `broker stats`: what a running broker is doing, as an aligned table or as JSON, once or
//! redrawn every second.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stubs::{BrokerStats, JetStreamReport};
use transport::{AccessToken, ConnectError};

/// How often `--watch` redraws.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Why `broker stats` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The broker cannot be reached.
    #[error("cannot reach broker at {address} ({cause}): is 'cargo run -p broker' running?", address = .0.address(), cause = .0.cause())]
    Unreachable(ConnectError),
    /// The broker stopped answering.
    #[error("the broker at {address} did not answer: {error}")]
    NoAnswer {
        /// The broker's address.
        address: String,
        /// What went wrong.
        error: tarpc::client::RpcError,
    },
}

/// Fetches the broker's figures and prints them; with `watch`, again every second until
/// interrupted.
pub async fn show(
    address: &str,
    token: &AccessToken,
    json: bool,
    watch: bool,
) -> Result<(), StatsError> {
    let client = transport::connect_broker(address, transport::DEFAULT_CONNECT_TIMEOUT, token)
        .await
        .map_err(StatsError::Unreachable)?;
    loop {
        let stats = client
            .stats(tarpc::context::current())
            .await
            .map_err(|error| StatsError::NoAnswer {
                address: address.to_owned(),
                error,
            })?;
        let text = if json {
            to_json(&stats)
        } else {
            format_table(&stats, SystemTime::now())
        };
        if watch {
            // Clear the screen and go home, as `top` does.
            print!("\x1b[2J\x1b[H");
        }
        println!("{text}");
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

/// The figures as one JSON object.
pub fn to_json(stats: &BrokerStats) -> String {
    serde_json::to_string_pretty(stats)
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

/// The figures as two aligned tables, topics and subscribers.
pub fn format_table(stats: &BrokerStats, now: SystemTime) -> String {
    let mut rows = vec![[
        "topic",
        "capacity",
        "ready",
        "in_flight",
        "published",
        "completed",
        "failed",
        "requeued",
        "undeliverable",
        "dead",
        "subs",
        "rate/s",
        "p50_us",
        "p99_us",
    ]
    .map(String::from)
    .to_vec()];
    for topic in &stats.topics {
        rows.push(vec![
            topic.name.clone(),
            topic.capacity.to_string(),
            topic.ready.to_string(),
            topic.in_flight.to_string(),
            topic.published.to_string(),
            topic.completed.to_string(),
            topic.failed.to_string(),
            topic.requeued.to_string(),
            topic.undeliverable.to_string(),
            topic.dead.to_string(),
            topic.subscribers.to_string(),
            format!("{:.1}", topic.rate_per_s),
            topic.latency_us.p50.to_string(),
            topic.latency_us.p99.to_string(),
        ]);
    }
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let mut subscribers = vec![[
        "subscriber",
        "topic",
        "callback",
        "protocol",
        "prefetch",
        "in_flight",
        "completed",
        "failed",
        "since",
    ]
    .map(String::from)
    .to_vec()];
    for subscriber in &stats.subscribers {
        let age = now_s.saturating_sub(subscriber.connected_since_unix_s);
        subscribers.push(vec![
            subscriber.address.clone(),
            subscriber.topic.clone(),
            subscriber.callback.clone(),
            subscriber.protocol.name().to_owned(),
            subscriber.prefetch.to_string(),
            subscriber.in_flight.to_string(),
            subscriber.completed.to_string(),
            subscriber.failed.to_string(),
            format!("{}s ago", age),
        ]);
    }
    let mut text = format!("broker up {}s\n\n", stats.uptime_s);
    text.push_str(&align(&rows));
    text.push('\n');
    text.push_str(&align(&subscribers));
    let streams: Vec<(&str, &JetStreamReport)> = stats
        .topics
        .iter()
        .filter_map(|topic| Some((topic.name.as_str(), topic.jetstream.as_ref()?)))
        .collect();
    if !streams.is_empty() {
        text.push_str("\nJetStream, all brokers (published..requeued above: this broker's)\n");
        text.push_str(&align(&stream_rows(&streams)));
    }
    text
}

/// Each topic's stream as JetStream reports it, a row each.
fn stream_rows(streams: &[(&str, &JetStreamReport)]) -> Vec<Vec<String>> {
    let mut rows = vec![[
        "topic",
        "stream",
        "leader",
        "replicas",
        "messages",
        "last_seq",
        "pending",
        "ack_pending",
        "redelivered",
        "pulls",
    ]
    .map(String::from)
    .to_vec()];
    for (topic, stream) in streams {
        rows.push(vec![
            topic.to_string(),
            stream.stream.clone(),
            stream.leader.clone().unwrap_or_else(|| "none".into()),
            format!("{}/{}", stream.current_replicas, stream.replicas),
            stream.messages.to_string(),
            stream.last_sequence.to_string(),
            stream.pending.to_string(),
            stream.ack_pending.to_string(),
            stream.redelivered.to_string(),
            stream.waiting_pulls.to_string(),
        ]);
    }
    rows
}

/// Lays rows out in columns: the first left-aligned, the others right-aligned.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            let width = widths[column];
            let _ = if column == 0 {
                write!(text, "{cell:<width$}")
            } else {
                write!(text, "  {cell:>width$}")
            };
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use stubs::{Latency, SubscriberReport, TopicReport};

    fn sample() -> BrokerStats {
        BrokerStats {
            topics: vec![TopicReport {
                name: "multiply".into(),
                capacity: 10,
                ready: 3,
                in_flight: 2,
                published: 1_000,
                completed: 994,
                failed: 1,
                requeued: 4,
                undeliverable: 1,
                dead: 1,
                subscribers: 2,
                rate_per_s: 98.7,
                latency_us: Latency {
                    p50: 350,
                    p99: 1_200,
                },
                jetstream: None,
            }],
            subscribers: vec![SubscriberReport {
                topic: "multiply".into(),
                address: "127.0.0.1:8031".into(),
                callback: "Factory.Multiply".into(),
                protocol: stubs::Protocol::Tarpc,
                prefetch: 1,
                in_flight: 1,
                completed: 500,
                failed: 0,
                connected_since_unix_s: 1_000,
            }],
            uptime_s: 42,
        }
    }

    #[test]
    fn json_has_exactly_the_documented_field_names() {
        let json: serde_json::Value = serde_json::from_str(&to_json(&sample())).unwrap();
        let object = json.as_object().unwrap();
        let mut keys: Vec<_> = object.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["subscribers", "topics", "uptime_s"]);
        let topic = json["topics"][0].as_object().unwrap();
        let mut keys: Vec<_> = topic.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "capacity",
                "completed",
                "dead",
                "failed",
                "in_flight",
                "jetstream",
                "latency_us",
                "name",
                "published",
                "rate_per_s",
                "ready",
                "requeued",
                "subscribers",
                "undeliverable"
            ]
        );
        assert_eq!(json["topics"][0]["latency_us"]["p99"], 1_200);
        assert_eq!(json["topics"][0]["rate_per_s"], 98.7);
    }

    #[test]
    fn the_table_is_aligned() {
        let now = UNIX_EPOCH + Duration::from_secs(1_012);
        let table = format_table(&sample(), now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "broker up 42s");
        assert_eq!(lines[2].len(), lines[3].len(), "{table}");
        assert!(lines[3].starts_with("multiply"), "{table}");
        assert!(lines[3].ends_with("  98.7     350    1200"), "{table}");
        assert!(table.contains("127.0.0.1:8031"), "{table}");
        assert!(table.contains("12s ago"), "{table}");
        assert!(!table.contains("JetStream"), "{table}");
    }

    #[test]
    fn a_topic_in_jetstream_gets_its_stream_figures_in_a_table_of_their_own() {
        let mut stats = sample();
        stats.topics[0].jetstream = Some(JetStreamReport {
            stream: "pairbroker-multiply".into(),
            leader: Some("n2".into()),
            replicas: 3,
            current_replicas: 2,
            messages: 12,
            last_sequence: 4_000,
            pending: 7,
            ack_pending: 5,
            redelivered: 1,
            waiting_pulls: 3,
        });
        let now = UNIX_EPOCH + Duration::from_secs(1_012);
        let table = format_table(&stats, now);
        let lines: Vec<&str> = table.lines().collect();
        let heading = lines
            .iter()
            .position(|line| line.starts_with("JetStream, all brokers"))
            .expect(&table);
        assert!(lines[heading + 1].starts_with("topic "), "{table}");
        assert_eq!(
            lines[heading + 1].len(),
            lines[heading + 2].len(),
            "{table}"
        );
        let cells: Vec<&str> = lines[heading + 2].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "multiply",
                "pairbroker-multiply",
                "n2",
                "2/3",
                "12",
                "4000",
                "7",
                "5",
                "1",
                "3"
            ]
        );
        let json: serde_json::Value = serde_json::from_str(&to_json(&stats)).unwrap();
        assert_eq!(json["topics"][0]["jetstream"]["last_sequence"], 4_000);
        assert_eq!(json["topics"][0]["jetstream"]["leader"], "n2");
    }
}
