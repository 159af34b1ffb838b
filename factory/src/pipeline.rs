//! The pipeline of Part 2b: every two Multiply results of Pairs become a new Pair on the
//! `divide` topic, and every three results of Triplets a new Triplet. One task does the
//! grouping, fed by a channel, so that the Multiply handler never waits on the broker.
//!
//! When it stops, the pipeline tells what it did in a [`PipelineReport`]: how many results it
//! was handed, how many groups it published and what was left over. A caller that wants the
//! report runs the factory inside [`reporting_to`].

use std::future::Future;
use std::sync::Arc;

use lab_console::Console;
use parking_lot::Mutex;
use stubs::{BrokerError, Job, Pair, PublishRequest, Triplet};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;
use transport::{BrokerLink, LinkError};

/// How many Multiply results may wait for the pipeline task. When it is full, the Multiply
/// handler waits, which slows the broker's calls down instead of growing memory.
pub const PIPELINE_BACKLOG: usize = 1_024;

/// A Multiply result, with the shape of the job it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultiplyResult {
    /// The product of a Pair.
    OfPair(i64),
    /// The product of a Triplet.
    OfTriplet(i64),
}

/// Where the Multiply handler sends its results.
#[derive(Clone, Debug)]
pub struct PipelineInput(mpsc::Sender<MultiplyResult>);

impl PipelineInput {
    /// Hands a result to the pipeline, waiting while its backlog is full.
    pub async fn send(&self, result: MultiplyResult) {
        if self.0.send(result).await.is_err() {
            tracing::warn!("the pipeline has stopped; {result} is not grouped");
        }
    }
}

impl std::fmt::Display for MultiplyResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MultiplyResult::OfPair(result) => write!(f, "the Pair result {result}"),
            MultiplyResult::OfTriplet(result) => write!(f, "the Triplet result {result}"),
        }
    }
}

/// What the pipeline held when its input closed: results that never made a whole group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Pair results without a partner.
    pub pairs: Vec<i64>,
    /// Triplet results short of a group of three.
    pub triplets: Vec<i64>,
}

impl Leftovers {
    /// Whether every result made a whole group.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty() && self.triplets.is_empty()
    }
}

/// As a log line says it: `1 Pair result without a partner (165)`.
impl std::fmt::Display for Leftovers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.pairs.is_empty() {
            parts.push(results(&self.pairs, "Pair", "without a partner"));
        }
        if !self.triplets.is_empty() {
            parts.push(results(
                &self.triplets,
                "Triplet",
                "short of a group of three",
            ));
        }
        if parts.is_empty() {
            return f.write_str("no result left over");
        }
        f.write_str(&parts.join(" and "))
    }
}

/// `2 Pair results without a partner (3, 4)`.
fn results(values: &[i64], shape: &str, why: &str) -> String {
    let plural = if values.len() == 1 { "" } else { "s" };
    let listed: Vec<String> = values.iter().map(i64::to_string).collect();
    format!(
        "{} {shape} result{plural} {why} ({})",
        values.len(),
        listed.join(", ")
    )
}

/// What a pipeline did, from its start until its input closed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineReport {
    /// Multiply results of Pairs it was handed.
    pub pair_results: u64,
    /// Pairs it published to `divide`, two results each.
    pub pairs_published: u64,
    /// Multiply results of Triplets it was handed.
    pub triplet_results: u64,
    /// Triplets it published to `divide`, three results each.
    pub triplets_published: u64,
    /// The results that made no whole group.
    pub leftovers: Leftovers,
}

impl PipelineReport {
    /// The Divide jobs it published, Pairs and Triplets.
    pub fn published(&self) -> u64 {
        self.pairs_published + self.triplets_published
    }

    fn handed(&mut self, result: MultiplyResult) {
        match result {
            MultiplyResult::OfPair(_) => self.pair_results += 1,
            MultiplyResult::OfTriplet(_) => self.triplet_results += 1,
        }
    }

    fn published_one(&mut self, job: Job) {
        match job {
            Job::Pair(_) => self.pairs_published += 1,
            Job::Triplet(_) => self.triplets_published += 1,
        }
    }
}

/// Where the report of a pipeline started inside [`reporting_to`] is left when it stops.
#[derive(Clone, Debug, Default)]
pub struct ReportSlot(Arc<Mutex<Option<PipelineReport>>>);

impl ReportSlot {
    /// The report, once the pipeline has stopped; `None` before, or if none was started.
    pub fn take(&self) -> Option<PipelineReport> {
        // Not tokio's mutex: it is held for a move, never across an await.
        self.0.lock().take()
    }

    fn fill(&self, report: PipelineReport) {
        *self.0.lock() = Some(report);
    }
}

tokio::task_local! {
    /// The slot of the pipeline that the factory in this task starts, if its caller asked.
    static REPORT_SLOT: ReportSlot;
}

/// Runs `factory` (a [`crate::run`]) so that the pipeline it starts leaves its report in `slot`
/// when it stops. A task-local rather than a parameter, so that [`crate::run`] and the `factory`
/// program keep their shape while the one-process lab hears what each factory paired.
pub async fn reporting_to<F: Future>(slot: ReportSlot, factory: F) -> F::Output {
    REPORT_SLOT.scope(slot, factory).await
}

/// Starts the pipeline task. It runs until every [`PipelineInput`] is dropped and then returns
/// what it could not group; inside [`reporting_to`], it also leaves its whole report there.
pub fn spawn(
    broker: Arc<BrokerLink>,
    divide_topic: String,
    console: Console,
) -> (PipelineInput, JoinHandle<Leftovers>) {
    let (input, mut results) = mpsc::channel(PIPELINE_BACKLOG);
    let slot = REPORT_SLOT.try_with(ReportSlot::clone).ok();
    // In the caller's span, so that the lab names the factory on the pipeline's lines.
    let task = tokio::spawn(
        async move {
            let mut groups = Groups::default();
            let mut report = PipelineReport::default();
            while let Some(result) = results.recv().await {
                report.handed(result);
                if let Some(job) = groups.add(result) {
                    if publish_until_accepted(&broker, &divide_topic, job, &console).await {
                        report.published_one(job);
                    }
                }
            }
            report.leftovers = groups.into_leftovers();
            let leftovers = report.leftovers.clone();
            if let Some(slot) = slot {
                slot.fill(report);
            }
            leftovers
        }
        .in_current_span(),
    );
    (PipelineInput(input), task)
}

/// The results waiting for partners, Pairs' and Triplets' apart.
#[derive(Debug, Default)]
struct Groups {
    pairs: Vec<i64>,
    triplets: Vec<i64>,
}

impl Groups {
    /// Adds a result; returns the new Divide job when it completes a group.
    fn add(&mut self, result: MultiplyResult) -> Option<Job> {
        match result {
            MultiplyResult::OfPair(value) => {
                self.pairs.push(value);
                match self.pairs[..] {
                    [x, y] => {
                        self.pairs.clear();
                        Some(Pair { x, y }.into())
                    }
                    _ => None,
                }
            }
            MultiplyResult::OfTriplet(value) => {
                self.triplets.push(value);
                match self.triplets[..] {
                    [x, y, z] => {
                        self.triplets.clear();
                        Some(Triplet { x, y, z }.into())
                    }
                    _ => None,
                }
            }
        }
    }

    fn into_leftovers(self) -> Leftovers {
        Leftovers {
            pairs: self.pairs,
            triplets: self.triplets,
        }
    }
}

/// Publishes `job`, trying again until the broker accepts it: a group of results is never
/// dropped because the broker was busy or briefly away. A full `divide` topic is waited on
/// for as long as it stays full (back-pressure, which slows the Multiply handler down); a
/// publish that failed for now, or found the topic gone from a restarted broker (the
/// factory's membership creates it again) or a broker stopping (the link finds the next one),
/// is made again as the link's [`transport::retry::Retry`] allows. True once the broker has
/// stored it.
///
/// The line `pipeline: 408 and 12 -> divide` is printed before the first try, not after the
/// broker's answer: the broker may hand the new job to a factory, and print its result, before
/// that answer arrives, and a line that follows the result it caused reads backwards. The job's
/// id comes only with the answer, so it is logged (debug) rather than printed on a second line:
/// the result lines it would be matched with do not show ids.
async fn publish_until_accepted(
    broker: &BrokerLink,
    topic: &str,
    job: Job,
    console: &Console,
) -> bool {
    console.line(format_args!("pipeline: {job} -> {topic}"));
    let request = PublishRequest {
        topic: topic.to_owned(),
        job,
    };
    let mut retry = broker.retry();
    loop {
        let answer = broker
            .call(&request, |client, request| async move {
                client.publish(tarpc::context::current(), request).await
            })
            .await;
        let error = match answer {
            Ok(Ok(published)) => {
                tracing::debug!(
                    "the pipeline published {job} to {topic:?} as job {}",
                    published.job_id
                );
                return true;
            }
            Ok(Err(BrokerError::TopicFull { .. })) => continue,
            Ok(Err(refusal)) => PublishFailure::Refused(refusal),
            Err(error) => PublishFailure::Link(error),
        };
        if error.is_transient() {
            let waited = retry.wait(|pause| {
                tracing::warn!(
                    "the pipeline could not publish {job} to {topic:?} ({error}); trying again in {}",
                    lab_console::Rounded(pause)
                );
            });
            if waited.await.is_ok() {
                continue;
            }
        }
        tracing::error!("the pipeline gave up publishing {job}: {error}");
        return false;
    }
}

#[derive(Debug, thiserror::Error)]
enum PublishFailure {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Refused(#[from] BrokerError),
}

impl PublishFailure {
    /// Whether the pipeline publishes again: what failed for now, and what a restarted broker
    /// or the next one mends.
    fn is_transient(&self) -> bool {
        match self {
            PublishFailure::Link(error) => error.is_transient(),
            PublishFailure::Refused(
                BrokerError::NoSuchTopic { .. } | BrokerError::ShuttingDown,
            ) => true,
            PublishFailure::Refused(refusal) => refusal.is_transient(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_pairs_by_two_and_triplets_by_three_apart() {
        let mut groups = Groups::default();
        assert_eq!(groups.add(MultiplyResult::OfPair(408)), None);
        assert_eq!(groups.add(MultiplyResult::OfTriplet(6)), None);
        assert_eq!(
            groups.add(MultiplyResult::OfPair(12)),
            Some(Pair { x: 408, y: 12 }.into())
        );
        assert_eq!(groups.add(MultiplyResult::OfTriplet(60)), None);
        assert_eq!(groups.add(MultiplyResult::OfPair(1)), None);
        assert_eq!(
            groups.add(MultiplyResult::OfTriplet(2)),
            Some(Triplet { x: 6, y: 60, z: 2 }.into())
        );
        assert_eq!(
            groups.into_leftovers(),
            Leftovers {
                pairs: vec![1],
                triplets: vec![]
            }
        );
    }
}
