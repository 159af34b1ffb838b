//! The soak's report minute by minute: jobs completed, p99 latency from the broker's
//! histogram, the broker's memory, kills and the attacker's reopened connections.

use std::net::SocketAddr;

use stubs::BrokerClient;

use super::{mib, topic_of, TOPIC};
use crate::attacker::Attacker;
use crate::metrics;

/// The figures at the start of a minute, to subtract from the next minute's.
pub(super) struct Minute {
    pub completed: u64,
    /// Jobs per latency bucket since the broker started, and the count beyond the last bound.
    buckets: Vec<(f64, u64)>,
    beyond: u64,
    reopened: u64,
}

impl Minute {
    pub async fn begin(
        client: &BrokerClient,
        http: SocketAddr,
        attacker: &Attacker,
    ) -> anyhow::Result<Self> {
        let stats = client.stats(tarpc::context::current()).await?;
        let completed = topic_of(&stats.topics)?.completed;
        let exposition = metrics::fetch(http).await?;
        let buckets = metrics::latency_buckets(&exposition, TOPIC);
        let count = metrics::latency_count(&exposition, TOPIC);
        let beyond = count.saturating_sub(buckets.iter().map(|(_, jobs)| jobs).sum());
        Ok(Self {
            completed,
            buckets,
            beyond,
            reopened: attacker.reopened(),
        })
    }

    /// Prints the minute that ended at `next` (or the drain after the last), under `label`.
    pub fn print(&self, label: &str, next: &Minute, rss: u64, kills: u64) {
        let mut buckets = next.buckets.clone();
        for (bucket, before) in buckets.iter_mut().zip(&self.buckets) {
            bucket.1 = bucket.1.saturating_sub(before.1);
        }
        let beyond = next.beyond.saturating_sub(self.beyond);
        let total: u64 = buckets.iter().map(|(_, jobs)| jobs).sum::<u64>() + beyond;
        let p99 = metrics::percentile(&buckets, total, 0.99)
            .map_or("beyond the last bucket".to_owned(), |seconds| {
                format!("<= {:.2} ms", seconds * 1000.0)
            });
        println!(
            "{label:>6}  {:>9}  {p99:>11}  {:>7.1} MiB  {kills:>5}  {:>17}",
            next.completed - self.completed,
            mib(rss),
            next.reopened - self.reopened
        );
    }
}
