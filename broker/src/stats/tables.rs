//! The tables of `broker stats` and `broker dead-letters`, aligned for people.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stubs::{BrokerStats, DeadLetter, DeadLetters, JetStreamReport, SubscriberReport, TopicReport};

/// What a table shows for a figure that does not exist yet, such as the latency of a topic
/// before its first completion: a `0` there would read as "instant".
const NO_FIGURE: &str = "-";

/// The figures as aligned tables: topics, subscribers, and with JetStream each topic's stream.
pub fn format_table(stats: &BrokerStats, now: SystemTime) -> String {
    let topics = topic_table(&stats.topics);
    let subscribers = subscriber_table(&stats.subscribers, now);
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

/// Each topic's figures, a row each.
fn topic_table(reports: &[TopicReport]) -> Table {
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
    for topic in reports {
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
    topics
}

/// Each subscription's figures, a row each, its age counted back from `now`.
fn subscriber_table(reports: &[SubscriberReport], now: SystemTime) -> Table {
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
    for subscriber in reports {
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
    subscribers
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
