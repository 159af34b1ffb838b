//! Job-by-job accounting of a run of real miners and factories under load: the processes that
//! make the load, what the miners printed as acknowledged, what the factories printed as
//! computed, and which acknowledged jobs were never completed or completed more than once.

use std::collections::HashMap;

use stubs::BrokerClient;

use crate::{eventually_async, Process};

/// A miner publishing to `topic` as fast as it can (8 at a time, buffer 500) through
/// `brokers` (`a,b`), printing a line per acknowledged job, reconnecting for up to 120 s.
pub fn load_miner(brokers: &str, topic: &str) -> Process {
    let args = [
        "--broker",
        brokers,
        "--give-up-after",
        "120s",
        "--topic",
        topic,
        "--interval",
        "0",
        "--concurrency",
        "8",
        "--buffer",
        "500",
    ];
    Process::start("miner", &args)
}

/// A factory of both topics (no pipeline, prefetch 8) subscribed through `brokers`, printing
/// a line per job computed, reconnecting for up to 120 s.
pub fn load_factory(brokers: &str) -> Process {
    let args = [
        "--broker",
        brokers,
        "--give-up-after",
        "120s",
        "--port",
        "0",
        "--no-pipeline",
        "--prefetch",
        "8",
    ];
    Process::start("factory", &args)
}

/// A job as both ends print it: its topic and its two operands.
pub type JobKey = (&'static str, i64, i64);

/// The jobs a miner printed as acknowledged: `published X and Y to TOPIC (job N)`.
pub fn acknowledged(lines: &[String]) -> Vec<JobKey> {
    lines
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix("published ")?;
            let (operands, rest) = rest.split_once(" to ")?;
            let (x, y) = operands.split_once(" and ")?;
            let topic = match rest.split_once(' ')?.0 {
                "multiply" => "multiply",
                "divide" => "divide",
                _ => return None,
            };
            Some((topic, x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}

/// The jobs a factory printed as computed: `X * Y = P` or `X / Y = Q`.
pub fn computed(lines: &[String]) -> Vec<JobKey> {
    lines
        .iter()
        .filter_map(|line| {
            let (operation, _) = line.split_once(" = ")?;
            let mut words = operation.split(' ');
            let x = words.next()?.parse().ok()?;
            let topic = match words.next()? {
                "*" => "multiply",
                "/" => "divide",
                _ => return None,
            };
            let y = words.next()?.parse().ok()?;
            Some((topic, x, y))
        })
        .collect()
}

/// The ready and in-flight jobs of every topic, once the broker answers.
pub async fn unsettled(client: &BrokerClient) -> Option<u64> {
    let stats = client.stats(tarpc::context::current()).await.ok()?;
    Some(
        stats
            .topics
            .iter()
            .map(|topic| topic.ready + topic.in_flight)
            .sum(),
    )
}

/// Waits until the broker behind `client` holds no job ready or in flight, then sets
/// `acknowledged` against the jobs the `factories` printed as computed.
pub async fn reckon_when_settled(
    client: &BrokerClient,
    acknowledged: &[JobKey],
    factories: &[Process],
) -> Reckoning {
    eventually_async("every stored job is settled", async || {
        unsettled(client).await == Some(0)
    })
    .await;
    let computed = factories
        .iter()
        .flat_map(|factory| computed(&factory.lines()));
    reckon(acknowledged, computed)
}

/// Acknowledged jobs set against completed ones.
#[derive(Debug)]
pub struct Reckoning {
    /// Jobs acknowledged to the miners.
    pub acknowledged: usize,
    /// Acknowledged jobs no factory completed, the first few.
    pub missing: Vec<JobKey>,
    /// How many acknowledged jobs were missing in all.
    pub missing_count: usize,
    /// Completions beyond the first of an acknowledged job.
    pub duplicates: usize,
    /// Acknowledged jobs completed more than once, the first few.
    pub duplicated: Vec<JobKey>,
}

/// Sets the jobs the miners printed as acknowledged against those the factories printed as
/// computed.
pub fn reckon(acknowledged: &[JobKey], computed: impl IntoIterator<Item = JobKey>) -> Reckoning {
    let mut completions: HashMap<JobKey, usize> = HashMap::new();
    for key in computed {
        *completions.entry(key).or_default() += 1;
    }
    let missing: Vec<JobKey> = acknowledged
        .iter()
        .filter(|key| !completions.contains_key(key))
        .copied()
        .collect();
    let duplicates = acknowledged
        .iter()
        .map(|key| completions.get(key).copied().unwrap_or(0).saturating_sub(1))
        .sum();
    let duplicated = acknowledged
        .iter()
        .filter(|key| completions.get(key).is_some_and(|count| *count > 1))
        .take(5)
        .copied()
        .collect();
    Reckoning {
        duplicated,
        acknowledged: acknowledged.len(),
        missing_count: missing.len(),
        missing: missing.into_iter().take(5).collect(),
        duplicates,
    }
}

/// A small random generator, seeded, so that a failing run can be told by its seed.
pub fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A seed from the clock, never zero.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64)
        | 1
}
