//! `broker stats` and `broker dead-letters`: what a running broker is doing and which of its
//! jobs failed, as aligned tables for people or as JSON for scripts; `--watch` shows the stats
//! again every second. `/api/dead-letters` serves the JSON of `broker dead-letters --json`, so
//! that the dashboard and the command cannot drift apart.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use stubs::{
    BrokerClient, BrokerError, BrokerStats, DeadLetter, DeadLetters, JetStreamReport, Job, JobError,
};
use transport::{AccessToken, ClientTls, ConnectError};

use crate::queue::JobStore;
use crate::requests::Broker;

/// How often `--watch` shows the figures again.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Clears a terminal and puts the cursor home, so that each snapshot replaces the last, as in
/// `top`. Written to terminals only: in a pipe or a file these bytes are garbage.
const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

/// What a table shows for a figure that does not exist yet, such as the latency of a topic
/// before its first completion: a `0` there would read as "instant".
const NO_FIGURE: &str = "-";

/// Why `broker stats` or `broker dead-letters` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The broker cannot be reached.
    #[error("{}", lab_console::unreachable_broker(.0))]
    Unreachable(ConnectError),
    /// The broker stopped answering.
    #[error("the broker at {address} did not answer: {error}")]
    NoAnswer {
        /// The broker's address.
        address: String,
        /// What went wrong.
        error: tarpc::client::RpcError,
    },
    /// The broker refused the request, e.g. for a topic it does not have.
    #[error("{0}")]
    Refused(BrokerError),
    /// Standard output failed for another reason than its reader going away.
    #[error("cannot write to standard output: {0}")]
    Output(std::io::Error),
}

/// How `--watch` sets one snapshot apart from the one before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Redraw {
    /// On a terminal: clear it and draw from the top.
    Screen,
    /// Into a pipe or a file: each snapshot after the last, a blank line between (JSON: one
    /// compact object a line), so that `grep`, `head` and `jq` read it as it comes.
    Append,
}

/// Fetches the broker's figures and prints them; with `watch`, again every second until
/// interrupted or until nobody reads standard output any more.
pub async fn show(
    address: &str,
    token: &AccessToken,
    tls: Option<&ClientTls>,
    json: bool,
    watch: bool,
) -> Result<(), StatsError> {
    let client = connect(address, token, tls).await?;
    let redraw = watch.then(|| {
        if std::io::stdout().is_terminal() {
            Redraw::Screen
        } else {
            Redraw::Append
        }
    });
    let mut first = true;
    loop {
        let stats = client
            .stats(tarpc::context::current())
            .await
            .map_err(|error| no_answer(address, error))?;
        let text = snapshot(&stats, json, redraw, first, SystemTime::now());
        if write_out(&text)?.is_break() || !watch {
            return Ok(());
        }
        first = false;
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

/// Fetches the dead letters of `topic`, or of every topic, and prints them.
pub async fn show_dead_letters(
    address: &str,
    token: &AccessToken,
    tls: Option<&ClientTls>,
    topic: Option<&str>,
    json: bool,
) -> Result<(), StatsError> {
    let client = connect(address, token, tls).await?;
    let topics = match topic {
        Some(topic) => vec![topic.to_owned()],
        None => client
            .stats(tarpc::context::current())
            .await
            .map_err(|error| no_answer(address, error))?
            .topics
            .into_iter()
            .map(|topic| topic.name)
            .collect(),
    };
    let mut lists = Vec::with_capacity(topics.len());
    for topic in topics {
        let letters = client
            .dead_letters(tarpc::context::current(), topic.clone())
            .await
            .map_err(|error| no_answer(address, error))?
            .map_err(StatsError::Refused)?;
        lists.push((topic, letters));
    }
    let text = if json {
        dead_letters_to_json(&lists) + "\n"
    } else {
        format_dead_letters(&lists)
    };
    // A reader that left early (`| head`) took what it wanted: a success either way.
    write_out(&text).map(|_| ())
}

/// `/api/dead-letters`: every topic's dead letters, as `broker dead-letters --json` prints them.
pub async fn api_dead_letters<S: JobStore>(State(broker): State<Arc<Broker<S>>>) -> Json<Value> {
    let mut lists = Vec::new();
    for topic in broker.stats().await.topics {
        // A topic cannot disappear, so this only skips a store that fails to answer, as
        // `stats` skips it.
        if let Ok(letters) = broker.dead_letters(&topic.name).await {
            lists.push((topic.name, letters));
        }
    }
    Json(dead_letters_value(&lists))
}

async fn connect(
    address: &str,
    token: &AccessToken,
    tls: Option<&ClientTls>,
) -> Result<BrokerClient, StatsError> {
    transport::connect_broker(address, transport::DEFAULT_CONNECT_TIMEOUT, token, tls)
        .await
        .map_err(StatsError::Unreachable)
}

fn no_answer(address: &str, error: tarpc::client::RpcError) -> StatsError {
    StatsError::NoAnswer {
        address: address.to_owned(),
        error,
    }
}

/// Writes `text` to standard output. Breaks when the reader has gone (a closed pipe, as once
/// `| head -1` has its line): nobody is left to tell, so the program ends quietly, and with
/// success, because the reader got all it asked for.
fn write_out(text: &str) -> Result<ControlFlow<()>, StatsError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(ControlFlow::Continue(())),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(ControlFlow::Break(())),
        Err(error) => Err(StatsError::Output(error)),
    }
}

/// One snapshot as written: alone without `--watch`; with it, set apart from the one before as
/// `redraw` says.
fn snapshot(
    stats: &BrokerStats,
    json: bool,
    redraw: Option<Redraw>,
    first: bool,
    now: SystemTime,
) -> String {
    match (redraw, json) {
        (None, true) => to_json(stats) + "\n",
        (None, false) => format_table(stats, now),
        (Some(Redraw::Screen), true) => format!("{CLEAR_SCREEN}{}\n", to_json(stats)),
        (Some(Redraw::Screen), false) => format!("{CLEAR_SCREEN}{}", format_table(stats, now)),
        (Some(Redraw::Append), true) => to_json_line(stats) + "\n",
        (Some(Redraw::Append), false) if first => format_table(stats, now),
        (Some(Redraw::Append), false) => format!("\n{}", format_table(stats, now)),
    }
}

/// The figures as one JSON object.
pub fn to_json(stats: &BrokerStats) -> String {
    serde_json::to_string_pretty(stats)
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

/// The figures as one JSON object on one line.
fn to_json_line(stats: &BrokerStats) -> String {
    serde_json::to_string(stats).unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

/// The figures as aligned tables: topics, subscribers, and with JetStream each topic's stream.
pub fn format_table(stats: &BrokerStats, now: SystemTime) -> String {
    let mut topics = Table::new(&[
        ("topic", Left),
        ("capacity", Right),
        ("ready", Right),
        ("in_flight", Right),
        ("published", Right),
        ("completed", Right),
        ("failed", Right),
        ("requeued", Right),
        ("undeliverable", Right),
        ("dead", Right),
        ("subs", Right),
        ("rate/s", Right),
        ("p50_us", Right),
        ("p99_us", Right),
    ]);
    for topic in &stats.topics {
        topics.push(vec![
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
            latency_cell(topic.latency_us.p50),
            latency_cell(topic.latency_us.p99),
        ]);
    }
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let mut subscribers = Table::new(&[
        ("subscriber", Left),
        ("topic", Left),
        ("callback", Left),
        ("protocol", Left),
        ("prefetch", Right),
        ("in_flight", Right),
        ("completed", Right),
        ("failed", Right),
        ("since", Right),
    ]);
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
            format!("{age}s ago"),
        ]);
    }
    let mut text = format!("broker up {}s\n\n", stats.uptime_s);
    text.push_str(&topics.render());
    text.push('\n');
    text.push_str(&subscribers.render());
    let streams: Vec<(&str, &JetStreamReport)> = stats
        .topics
        .iter()
        .filter_map(|topic| Some((topic.name.as_str(), topic.jetstream.as_ref()?)))
        .collect();
    if !streams.is_empty() {
        text.push_str("\nJetStream, all brokers (published..requeued above: this broker's)\n");
        text.push_str(&stream_table(&streams).render());
    }
    text
}

/// A latency percentile, or [`NO_FIGURE`] while the histogram is empty: the broker records at
/// least 1 µs per completion, so 0 means that nothing has completed yet.
fn latency_cell(us: u64) -> String {
    if us == 0 {
        NO_FIGURE.to_owned()
    } else {
        us.to_string()
    }
}

/// Each topic's stream as JetStream reports it, a row each.
fn stream_table(streams: &[(&str, &JetStreamReport)]) -> Table {
    let mut table = Table::new(&[
        ("topic", Left),
        ("stream", Left),
        ("leader", Left),
        ("replicas", Right),
        ("messages", Right),
        ("last_seq", Right),
        ("pending", Right),
        ("ack_pending", Right),
        ("redelivered", Right),
        ("pulls", Right),
    ]);
    for (topic, stream) in streams {
        table.push(vec![
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
    table
}

/// Each topic's dead letters, oldest first, then per topic how many jobs failed, how many of
/// them are kept and how many were dropped past the broker's `--dead-letter-limit`.
pub fn format_dead_letters(lists: &[(String, DeadLetters)]) -> String {
    if lists.is_empty() {
        return "no topics\n".to_owned();
    }
    let mut letters = Table::new(&[
        ("topic", Left),
        ("job_id", Right),
        ("failed_at", Left),
        ("factory", Left),
        ("job", Left),
        ("error", Left),
    ]);
    let mut counts = Table::new(&[
        ("topic", Left),
        ("failed", Right),
        ("kept", Right),
        ("dropped", Right),
    ]);
    for (topic, list) in lists {
        for letter in &list.letters {
            letters.push(vec![
                topic.clone(),
                letter.job_id.to_string(),
                failed_at(letter),
                printable(&letter.factory),
                letter.job.to_string(),
                printable(&letter.error.to_string()),
            ]);
        }
        counts.push(vec![
            topic.clone(),
            list.total.to_string(),
            list.letters.len().to_string(),
            list.dropped.to_string(),
        ]);
    }
    let mut text = if letters.rows.is_empty() {
        "no dead letters\n".to_owned()
    } else {
        letters.render()
    };
    text.push('\n');
    text.push_str(&counts.render());
    text
}

/// When a job failed, in UTC as RFC 3339: dead letters are read long after, beside logs, and
/// an absolute time stays true while "12s ago" goes stale.
fn failed_at(letter: &DeadLetter) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(letter.failed_at_unix_ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `text` with its control characters escaped: an error is in a factory's own words, and a
/// newline or a terminal code in it would break the table or the terminal.
fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// Dead letters as one JSON object, for scripts.
pub fn dead_letters_to_json(lists: &[(String, DeadLetters)]) -> String {
    serde_json::to_string_pretty(&dead_letters_value(lists))
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

/// `{"topics": [{"name", "total", "dropped", "letters": [...]}]}`: the job and the error as
/// the table shows them, with the job's operands and the error's kind beside them for scripts.
/// The job is there as text too because a reader in JavaScript rounds operands past 2^53.
fn dead_letters_value(lists: &[(String, DeadLetters)]) -> Value {
    let topics: Vec<Value> = lists
        .iter()
        .map(|(topic, list)| {
            let letters: Vec<Value> = list
                .letters
                .iter()
                .map(|letter| {
                    json!({
                        "job_id": letter.job_id,
                        "job": letter.job.to_string(),
                        "operands": operands(letter.job),
                        "error": letter.error.to_string(),
                        "error_kind": error_kind(&letter.error),
                        "factory": letter.factory,
                        "failed_at_unix_ms": letter.failed_at_unix_ms,
                    })
                })
                .collect();
            json!({
                "name": topic,
                "total": list.total,
                "dropped": list.dropped,
                "letters": letters,
            })
        })
        .collect();
    json!({ "topics": topics })
}

/// A job's operands in order, as `miner --job` takes them.
fn operands(job: Job) -> Vec<i64> {
    match job {
        Job::Pair(pair) => vec![pair.x, pair.y],
        Job::Triplet(triplet) => vec![triplet.x, triplet.y, triplet.z],
    }
}

/// A job error's kind, one word a script can match on.
fn error_kind(error: &JobError) -> &'static str {
    match error {
        JobError::DivideByZero => "divide_by_zero",
        JobError::Overflow => "overflow",
        JobError::Other { .. } => "other",
        JobError::Undeliverable { .. } => "undeliverable",
    }
}

/// Which side of its column a cell, and the column's header, keep to: text to the left,
/// numbers to the right, so that a header stands over its values and digits line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}
use Align::{Left, Right};

/// Rows under headers, laid out in columns two spaces apart.
struct Table {
    headers: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &[(&'static str, Align)]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.headers.len(), "a cell per column");
        self.rows.push(row);
    }

    /// The table as text, a line per row after the headers', with no trailing spaces. Widths
    /// count characters, as `format!`'s padding does.
    fn render(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, _)| (*name).to_owned())
            .collect();
        let lines: Vec<&Vec<String>> = std::iter::once(&headers).chain(&self.rows).collect();
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|column| {
                lines
                    .iter()
                    .map(|line| line[column].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for line in lines {
            let mut out = String::new();
            for (column, (cell, (_, align))) in line.iter().zip(&self.headers).enumerate() {
                let width = widths[column];
                if column > 0 {
                    out.push_str("  ");
                }
                // Writing to a String cannot fail.
                let _ = match align {
                    Left => write!(out, "{cell:<width$}"),
                    Right => write!(out, "{cell:>width$}"),
                };
            }
            text.push_str(out.trim_end());
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stubs::{Latency, Pair, SubscriberReport, TopicReport, Triplet};

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

    fn stream() -> JetStreamReport {
        JetStreamReport {
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
        }
    }

    fn dead_letters() -> Vec<(String, DeadLetters)> {
        let letter = |job_id, job: Job, error| DeadLetter {
            job_id,
            job,
            error,
            factory: "127.0.0.1:8031".into(),
            failed_at_unix_ms: 1_700_000_000_123,
        };
        vec![
            (
                "divide".into(),
                DeadLetters {
                    letters: vec![
                        letter(7, Pair { x: 5, y: 0 }.into(), JobError::DivideByZero),
                        letter(
                            12,
                            Triplet { x: 1, y: 2, z: 3 }.into(),
                            JobError::Other {
                                reason: "bad\nline".into(),
                            },
                        ),
                    ],
                    total: 3,
                    dropped: 1,
                },
            ),
            (
                "multiply".into(),
                DeadLetters {
                    letters: vec![],
                    total: 0,
                    dropped: 0,
                },
            ),
        ]
    }

    /// Every key of `value`, nested ones too, the first element standing for its array.
    fn keys(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                for (key, value) in object {
                    found.push(key.clone());
                    keys(value, found);
                }
            }
            Value::Array(items) => {
                if let Some(first) = items.first() {
                    keys(first, found);
                }
            }
            _ => {}
        }
    }

    /// The start and end character columns of `header` in a table's header line.
    fn span(header_line: &str, header: &str) -> (usize, usize) {
        let start = header_line
            .split_whitespace()
            .scan(0, |searched, word| {
                let at = *searched + header_line[*searched..].find(word)?;
                *searched = at + word.len();
                Some((word, at))
            })
            .find(|(word, _)| *word == header)
            .map(|(_, at)| at)
            .unwrap_or_else(|| panic!("{header} in {header_line:?}"));
        (start, start + header.len())
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
        assert_eq!(json["subscribers"][0]["protocol"], "tarpc");
    }

    #[test]
    fn readme_documents_every_field_that_the_json_has() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md beside the workspace");
        let section = readme
            .split("## Watching the broker")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README has a section on watching the broker");
        let mut stats = sample();
        stats.topics[0].jetstream = Some(stream());
        let mut found = Vec::new();
        keys(&serde_json::from_str(&to_json(&stats)).unwrap(), &mut found);
        keys(
            &serde_json::from_str(&dead_letters_to_json(&dead_letters())).unwrap(),
            &mut found,
        );
        for key in found {
            assert!(
                section.contains(&format!("\"{key}\"")),
                "README's section on watching the broker does not list \"{key}\""
            );
        }
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
    fn text_keeps_left_under_its_header_and_numbers_right_under_theirs() {
        let now = UNIX_EPOCH + Duration::from_secs(1_012);
        let table = format_table(&sample(), now);
        let lines: Vec<&str> = table.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("subscriber"))
            .unwrap();
        let (header, row) = (lines[header], lines[header + 1]);
        for (name, value) in [
            ("subscriber", "127.0.0.1:8031"),
            ("topic", "multiply"),
            ("callback", "Factory.Multiply"),
            ("protocol", "tarpc"),
        ] {
            let (start, _) = span(header, name);
            assert_eq!(&row[start..start + value.len()], value, "{table}");
        }
        for (name, value) in [
            ("prefetch", "1"),
            ("completed", "500"),
            ("since", "12s ago"),
        ] {
            let (_, end) = span(header, name);
            assert_eq!(&row[end - value.len()..end], value, "{table}");
        }
        assert!(table.lines().all(|line| line == line.trim_end()), "{table}");
    }

    #[test]
    fn a_latency_before_the_first_completion_is_a_dash() {
        let mut stats = sample();
        stats.topics[0].completed = 0;
        stats.topics[0].rate_per_s = 0.0;
        stats.topics[0].latency_us = Latency::default();
        let table = format_table(&stats, UNIX_EPOCH);
        let row = table.lines().find(|l| l.starts_with("multiply")).unwrap();
        assert!(row.ends_with("  0.0       -       -"), "{table}");
    }

    #[test]
    fn watch_into_a_pipe_appends_snapshots_without_terminal_codes() {
        let stats = sample();
        let first = snapshot(&stats, false, Some(Redraw::Append), true, UNIX_EPOCH);
        let next = snapshot(&stats, false, Some(Redraw::Append), false, UNIX_EPOCH);
        assert!(first.starts_with("broker up"), "{first}");
        assert_eq!(next, format!("\n{first}"));
        let line = snapshot(&stats, true, Some(Redraw::Append), false, UNIX_EPOCH);
        assert_eq!(line.lines().count(), 1, "one JSON object a line: {line}");
        assert_eq!(serde_json::from_str::<BrokerStats>(&line).unwrap(), stats);
        for text in [first, next, line] {
            assert!(!text.contains('\x1b'), "{text:?}");
        }
        let screen = snapshot(&stats, false, Some(Redraw::Screen), false, UNIX_EPOCH);
        assert!(screen.starts_with(CLEAR_SCREEN), "{screen:?}");
    }

    #[test]
    fn a_topic_in_jetstream_gets_its_stream_figures_in_a_table_of_their_own() {
        let mut stats = sample();
        stats.topics[0].jetstream = Some(stream());
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

    #[test]
    fn dead_letters_are_a_table_of_letters_then_a_count_per_topic() {
        let table = format_dead_letters(&dead_letters());
        let lines: Vec<&str> = table.lines().collect();
        let (header, first) = (lines[0], lines[1]);
        assert!(first.starts_with("divide "), "{table}");
        let (_, end) = span(header, "job_id");
        assert_eq!(&first[end - 1..end], "7", "{table}");
        let (start, _) = span(header, "failed_at");
        assert!(
            first[start..].starts_with("2023-11-14T22:13:20Z  127.0.0.1:8031  5 and 0"),
            "{table}"
        );
        assert!(first.ends_with("  division by zero"), "{table}");
        assert!(lines[2].ends_with("1, 2 and 3  bad\\nline"), "{table}");
        assert_eq!(lines[3], "", "{table}");
        assert_eq!(lines[4], "topic     failed  kept  dropped");
        assert_eq!(lines[5], "divide         3     2        1");
        assert_eq!(lines[6], "multiply       0     0        0");
        let none = format_dead_letters(&dead_letters()[1..]);
        assert!(none.starts_with("no dead letters\n\ntopic"), "{none}");
        assert_eq!(format_dead_letters(&[]), "no topics\n");
    }

    #[test]
    fn dead_letters_in_json_give_the_job_and_its_operands_the_error_and_its_kind() {
        let json: Value = serde_json::from_str(&dead_letters_to_json(&dead_letters())).unwrap();
        let divide = &json["topics"][0];
        assert_eq!(
            (&divide["name"], &divide["total"], &divide["dropped"]),
            (&json!("divide"), &json!(3), &json!(1))
        );
        let letter = &divide["letters"][0];
        assert_eq!(letter["job_id"], 7);
        assert_eq!(letter["job"], "5 and 0");
        assert_eq!(letter["operands"], json!([5, 0]));
        assert_eq!(letter["error"], "division by zero");
        assert_eq!(letter["error_kind"], "divide_by_zero");
        assert_eq!(letter["factory"], "127.0.0.1:8031");
        assert_eq!(letter["failed_at_unix_ms"], 1_700_000_000_123_u64);
        assert_eq!(divide["letters"][1]["operands"], json!([1, 2, 3]));
        assert_eq!(divide["letters"][1]["error"], "bad\nline");
        assert_eq!(json["topics"][1]["letters"], json!([]));
    }
}
