use std::time::UNIX_EPOCH;

use serde_json::{json, Value};
use stubs::{
    DeadLetter, DeadLetters, JetStreamReport, Job, JobError, Latency, Pair, SubscriberReport,
    TopicReport, Triplet,
};

use super::*;

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
