//! The broker's `/metrics` as the runner reads it: the latency histogram of the workloads'
//! topic, per bucket rather than cumulative, and its percentiles.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The broker's Prometheus text exposition, from its HTTP side at `http`.
pub async fn fetch(http: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(http)
        .await
        .with_context(|| format!("cannot reach the broker's HTTP side at {http}"))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// Reads the `job_latency_seconds` buckets of `topic` out of a Prometheus text exposition and
/// turns cumulative counts into counts per bucket; the `+Inf` bucket is left out.
pub fn latency_buckets(exposition: &str, topic: &str) -> Vec<(f64, u64)> {
    let label = format!("topic=\"{topic}\"");
    let mut cumulative: Vec<(f64, u64)> = exposition
        .lines()
        .filter(|line| line.contains("job_latency_seconds_bucket{") && line.contains(&label))
        .filter_map(|line| {
            let le = line.split("le=\"").nth(1)?.split('"').next()?;
            let count = line.rsplit(' ').next()?.parse::<u64>().ok()?;
            Some((le.parse::<f64>().ok()?, count))
        })
        .filter(|(le, _)| le.is_finite())
        .collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut below = 0;
    cumulative
        .into_iter()
        .map(|(le, count)| {
            let in_bucket = count.saturating_sub(below);
            below = count;
            (le, in_bucket)
        })
        .collect()
}

/// The count of `topic`'s latency histogram, beyond its last bound included.
pub fn latency_count(exposition: &str, topic: &str) -> u64 {
    let label = format!("topic=\"{topic}\"");
    exposition
        .lines()
        .find(|line| line.contains("job_latency_seconds_count{") && line.contains(&label))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

/// The upper bound of the bucket that holds the `share` quantile of `total` jobs, or `None`
/// when it lies beyond the last bound.
pub fn percentile(buckets: &[(f64, u64)], total: u64, share: f64) -> Option<f64> {
    let wanted = (total as f64 * share).ceil() as u64;
    let mut below = 0;
    for (bound, jobs) in buckets {
        below += jobs;
        if below >= wanted {
            return Some(*bound);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets_become_counts_per_bucket() {
        let exposition = "\
# TYPE pairbroker_job_latency_seconds histogram
pairbroker_job_latency_seconds_sum{topic=\"multiply\"} 0.5
pairbroker_job_latency_seconds_bucket{le=\"0.00002\",topic=\"multiply\"} 0
pairbroker_job_latency_seconds_bucket{le=\"0.00003\",topic=\"multiply\"} 4
pairbroker_job_latency_seconds_bucket{le=\"0.000045\",topic=\"multiply\"} 10
pairbroker_job_latency_seconds_bucket{le=\"+Inf\",topic=\"multiply\"} 11
pairbroker_job_latency_seconds_bucket{le=\"0.00003\",topic=\"divide\"} 99
";
        assert_eq!(
            latency_buckets(exposition, "multiply"),
            vec![(0.00002, 0), (0.00003, 4), (0.000045, 6)]
        );
    }

    #[test]
    fn the_p99_is_the_bound_of_the_bucket_that_reaches_it() {
        let buckets = [(0.001, 90), (0.002, 9), (0.005, 1)];
        assert_eq!(percentile(&buckets, 100, 0.99), Some(0.002));
        assert_eq!(percentile(&buckets, 200, 0.99), None);
    }
}
