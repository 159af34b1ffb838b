//! What became of each job a dispatcher delivered, and who hears of it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lab_console::Console;
use stubs::{Callback, Job, JobError};

use crate::queue::JobId;

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The factory computed the job.
    Completed {
        /// The topic of the job.
        topic: Arc<str>,
        /// The job's identifier.
        job_id: JobId,
        /// The procedure called.
        callback: Callback,
        /// The job.
        job: Job,
        /// The value the factory returned.
        result: i64,
        /// The factory's address.
        factory: Arc<str>,
    },
    /// The factory answered with a job error; the job is not retried.
    Failed {
        /// The topic of the job.
        topic: Arc<str>,
        /// The job's identifier.
        job_id: JobId,
        /// The procedure called.
        callback: Callback,
        /// The job.
        job: Job,
        /// What the factory said.
        error: JobError,
        /// The factory's address.
        factory: Arc<str>,
    },
    /// The call failed in transport or passed its deadline; the job went back to its topic.
    Requeued {
        /// The topic of the job.
        topic: Arc<str>,
        /// The job's identifier.
        job_id: JobId,
        /// The procedure called.
        callback: Callback,
        /// The job.
        job: Job,
        /// Why the call failed.
        reason: String,
        /// The factory's address.
        factory: Arc<str>,
    },
    /// The call failed in transport or passed its deadline, and the job had been delivered as
    /// many times as the broker allows: it was dead-lettered instead of going back, because it
    /// may well be what brings its factories down.
    Undeliverable {
        /// The topic of the job.
        topic: Arc<str>,
        /// The job's identifier.
        job_id: JobId,
        /// The procedure called.
        callback: Callback,
        /// The job.
        job: Job,
        /// How many times the job was delivered, this time included.
        deliveries: u32,
        /// Why the last call failed.
        reason: String,
        /// The address of the factory whose call failed last.
        factory: Arc<str>,
    },
}

/// The broker's result lines: `Factory.Multiply of 12 and 34 is 408`,
/// `Factory.Divide of 5 and 0 failed: division by zero`, and for a job given up on,
/// `Factory.Divide of 5 and 0 dead-lettered: delivered 5 times; every call failed: …`.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Completed {
                callback,
                job,
                result,
                ..
            } => write!(f, "{callback} of {job} is {result}"),
            Outcome::Failed {
                callback,
                job,
                error,
                ..
            } => write!(f, "{callback} of {job} failed: {error}"),
            Outcome::Requeued {
                callback,
                job,
                reason,
                factory,
                ..
            } => write!(f, "{callback} of {job} on {factory} requeued: {reason}"),
            Outcome::Undeliverable {
                callback,
                job,
                deliveries,
                reason,
                ..
            } => {
                // The dead letter's own words, so that the line and the letter agree.
                let error = JobError::Undeliverable {
                    deliveries: *deliveries,
                    reason: reason.clone(),
                };
                write!(f, "{callback} of {job} dead-lettered: {error}")
            }
        }
    }
}

/// Hears of every outcome, in the order the dispatchers settle them. It is called on the
/// dispatcher's task, so it must be quick.
pub type Observer = Arc<dyn Fn(&Outcome) + Send + Sync>;

/// The lab's output: a line for each completed, failed or dead-lettered job on `console`.
/// Requeues are logged by the dispatcher instead, since they are about the factory, not the job.
pub fn print_results(console: Console) -> Observer {
    Arc::new(move |outcome| {
        if !matches!(outcome, Outcome::Requeued { .. }) {
            console.line(format_args!("{outcome}"));
        }
    })
}

/// For `--quiet`: no line per job, but a log line each second that saw jobs settled, with the
/// count, so that a busy broker still shows it is working.
pub fn count_results() -> Observer {
    /// How often the count is logged.
    const COUNT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let observer_counts = counts.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(COUNT_INTERVAL);
        loop {
            ticks.tick().await;
            let completed = counts[0].swap(0, Ordering::Relaxed);
            let failed = counts[1].swap(0, Ordering::Relaxed);
            if completed + failed > 0 {
                tracing::info!("{completed} jobs completed and {failed} failed in the last second");
            }
            // The observer is gone with the broker: stop counting.
            if Arc::strong_count(&counts) == 1 {
                return;
            }
        }
    });
    Arc::new(move |outcome| match outcome {
        Outcome::Completed { .. } => {
            observer_counts[0].fetch_add(1, Ordering::Relaxed);
        }
        Outcome::Failed { .. } | Outcome::Undeliverable { .. } => {
            observer_counts[1].fetch_add(1, Ordering::Relaxed);
        }
        Outcome::Requeued { .. } => {}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stubs::{Pair, Triplet};

    #[test]
    fn result_lines_match_the_lab() {
        let completed = |job: Job, result| Outcome::Completed {
            topic: "multiply".into(),
            job_id: 1,
            callback: Callback::Multiply,
            job,
            result,
            factory: "127.0.0.1:8050".into(),
        };
        assert_eq!(
            completed(Pair { x: 12, y: 34 }.into(), 408).to_string(),
            "Factory.Multiply of 12 and 34 is 408"
        );
        assert_eq!(
            completed(Triplet { x: 1, y: 2, z: 3 }.into(), 6).to_string(),
            "Factory.Multiply of 1, 2 and 3 is 6"
        );
        let failed = Outcome::Failed {
            topic: "divide".into(),
            job_id: 3,
            callback: Callback::Divide,
            job: Pair { x: 5, y: 0 }.into(),
            error: JobError::DivideByZero,
            factory: "127.0.0.1:8050".into(),
        };
        assert_eq!(
            failed.to_string(),
            "Factory.Divide of 5 and 0 failed: division by zero"
        );
        let undeliverable = Outcome::Undeliverable {
            topic: "divide".into(),
            job_id: 4,
            callback: Callback::Divide,
            job: Pair { x: 5, y: 0 }.into(),
            deliveries: 5,
            reason: "connection closed".into(),
            factory: "127.0.0.1:8050".into(),
        };
        assert_eq!(
            undeliverable.to_string(),
            "Factory.Divide of 5 and 0 dead-lettered: delivered 5 times; every call failed: connection closed"
        );
    }
}
