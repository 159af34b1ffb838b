//! Chosen jobs: given one by one (`miner --job 12,34`, or a caller in the same process such as
//! a marking harness) instead of drawn at random, and published in the order given.

use stubs::Job;
use tokio_util::sync::CancellationToken;
use transport::LinkConfig;

use crate::topic::TopicLink;
use crate::{MinerError, Output};

/// Creates `topic` with `buffer` (nothing changes if it exists) and publishes `jobs` to it in
/// order, one publish each: the ids returned are in the order of `jobs`.
///
/// The jobs are published as the miner publishes its random ones: a full topic is waited on,
/// a lost broker is reconnected to, and a job the broker could not store is published again.
/// Wrap the call in a timeout if the topic may stay full.
pub async fn publish_jobs(
    link: LinkConfig,
    topic: &str,
    buffer: u32,
    jobs: &[Job],
) -> Result<Vec<u64>, MinerError> {
    run(
        link,
        topic,
        buffer,
        jobs,
        Output::Quiet,
        CancellationToken::new(),
    )
    .await
}

/// [`publish_jobs`], showing each job on `output` as it is published, until `shutdown`: the
/// ids of the jobs published, which are fewer than `jobs` only if shutdown came first.
pub async fn run(
    link: LinkConfig,
    topic: &str,
    buffer: u32,
    jobs: &[Job],
    output: impl Into<Output>,
    shutdown: CancellationToken,
) -> Result<Vec<u64>, MinerError> {
    let output = output.into();
    let Some((topic, batcher_task)) = TopicLink::open(&link, topic, buffer, &shutdown).await?
    else {
        return Ok(Vec::new());
    };
    let mut job_ids = Vec::with_capacity(jobs.len());
    // One job at a time, each published before the next is sent, so that the broker stores
    // them in the order given even across retries.
    for &job in jobs {
        let Some(job_id) = topic.publish(job, &shutdown).await? else {
            break;
        };
        output.published(job, topic.name(), job_id);
        job_ids.push(job_id);
    }
    // The batcher ends once its last handle is dropped; every job has its answer already.
    drop(topic);
    let _ = batcher_task.await;
    Ok(job_ids)
}
