//! A Go factory, called over net/rpc: the job as a gob struct with fields `X` and `Y` (and `Z`
//! for a Triplet), the answer a `JobReport{Result int}`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netrpc::{CallError, Client, FieldKind, Record, StructType};
use stubs::{Job, JobError, JobReport, Pair, Triplet};

/// A connection to a Go factory; several calls may be in flight on it.
pub struct GoFactory {
    client: Client,
}

impl GoFactory {
    /// Dials the factory at `address` (plain TCP: Go's net/rpc has no handshake).
    pub async fn connect(address: SocketAddr, timeout: Duration) -> Result<Self, String> {
        let client = Client::connect(address, timeout)
            .await
            .map_err(|error| error.to_string())?;
        Ok(Self { client })
    }

    /// Calls `method` with `job` by `deadline`: the factory's answer (its error as a job error),
    /// or why the call failed in transport.
    pub async fn call(
        &self,
        method: &str,
        job: Job,
        deadline: Instant,
    ) -> Result<Result<JobReport, JobError>, String> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self.client.call(method, argument(job), timeout).await {
            Ok(reply) => match reply.int("Result") {
                Ok(result) => Ok(Ok(JobReport { result })),
                // Answered, but not with a number: the job would fail the same way again.
                Err(error) => Ok(Err(JobError::Other {
                    reason: format!("the factory's answer is not a JobReport: {error}"),
                })),
            },
            Err(CallError::Remote(reason)) => Ok(Err(JobError::Other { reason })),
            Err(CallError::TimedOut) => {
                Err(format!("no reply within {}", lab_console::Rounded(timeout)))
            }
            Err(CallError::Transport(reason)) => Err(reason),
        }
    }

    /// Waits until the connection has ended: the factory closed it (its process died) or it
    /// failed. Every call on it fails from then on.
    pub async fn closed(&self) {
        self.client.closed().await
    }
}

/// The job as the Go lab's stubs declare it: `Pair{X, Y int}`, or `Triplet{X, Y, Z int}`.
fn argument(job: Job) -> Record {
    let (name, operands): (&str, &[(&str, i64)]) = match job {
        Job::Pair(Pair { x, y }) => ("Pair", &[("X", x), ("Y", y)]),
        Job::Triplet(Triplet { x, y, z }) => ("Triplet", &[("X", x), ("Y", y), ("Z", z)]),
    };
    let ty = operands
        .iter()
        .fold(StructType::new(name), |ty, (field, _)| {
            ty.field(*field, FieldKind::Int)
        });
    operands
        .iter()
        .try_fold(Record::new(&ty), |record, (field, value)| {
            record.set(field, *value)
        })
        // The fields set are the type's own, each an Int.
        .unwrap_or_else(|_| Record::new(&ty))
}
