//! The JSON of `broker stats --json` and `broker dead-letters --json`, which `/api/stats` and
//! `/api/dead-letters` serve too.

use serde_json::{json, Value};
use stubs::{BrokerStats, DeadLetters, Job, JobError};

/// The figures as one JSON object.
pub fn to_json(stats: &BrokerStats) -> String {
    serde_json::to_string_pretty(stats)
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

/// The figures as one JSON object on one line.
pub(super) fn to_json_line(stats: &BrokerStats) -> String {
    serde_json::to_string(stats).unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

/// Dead letters as one JSON object, for scripts.
pub fn dead_letters_to_json(lists: &[(String, DeadLetters)]) -> String {
    serde_json::to_string_pretty(&dead_letters_value(lists))
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

/// `{"topics": [{"name", "total", "dropped", "letters": [...]}]}`: the job and the error as
/// the table shows them, with the job's operands and the error's kind beside them for scripts.
/// The job is there as text too because a reader in JavaScript rounds operands past 2^53.
pub(super) fn dead_letters_value(lists: &[(String, DeadLetters)]) -> Value {
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
