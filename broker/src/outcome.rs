//! What became of each job a dispatcher delivered, and who hears of it.

use std::fmt;
use std::sync::Arc;

use lab_console::Console;
use stubs::{Job, JobError};

use crate::queue::JobId;

/// The procedure a subscription calls on its factory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Callback {
    /// `Factory.Multiply`.
    Multiply,
    /// `Factory.Divide`.
    Divide,
}

impl Callback {
    /// Reads a callback name of the lab (`"Factory.Multiply"` or `"Factory.Divide"`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            stubs::MULTIPLY => Some(Callback::Multiply),
            stubs::DIVIDE => Some(Callback::Divide),
            _ => None,
        }
    }

    /// The lab's name of the callback.
    pub fn name(self) -> &'static str {
        match self {
            Callback::Multiply => stubs::MULTIPLY,
            Callback::Divide => stubs::DIVIDE,
        }
    }
}

impl fmt::Display for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
}

/// The broker's result lines: `Factory.Multiply of 12 and 34 is 408` and
/// `Factory.Divide of 5 and 0 failed: division by zero`.
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
        }
    }
}

/// Hears of every outcome, in the order the dispatchers settle them. It is called on the
/// dispatcher's task, so it must be quick.
pub type Observer = Arc<dyn Fn(&Outcome) + Send + Sync>;

/// The lab's output: a line for each completed or failed job on `console`. Requeues are
/// logged by the dispatcher instead, since they are about the factory, not the job.
pub fn print_results(console: Console) -> Observer {
    Arc::new(move |outcome| {
        if !matches!(outcome, Outcome::Requeued { .. }) {
            console.line(format_args!("{outcome}"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stubs::{Pair, Triplet};

    #[test]
    fn result_lines_match_the_lab() {
        let completed = Outcome::Completed {
            topic: "multiply".into(),
            job_id: 1,
            callback: Callback::Multiply,
            job: Pair { x: 12, y: 34 }.into(),
            result: 408,
            factory: "127.0.0.1:8050".into(),
        };
        assert_eq!(
            completed.to_string(),
            "Factory.Multiply of 12 and 34 is 408"
        );
        let triplet = Outcome::Completed {
            topic: "multiply".into(),
            job_id: 2,
            callback: Callback::Multiply,
            job: Triplet { x: 1, y: 2, z: 3 }.into(),
            result: 6,
            factory: "127.0.0.1:8050".into(),
        };
        assert_eq!(triplet.to_string(), "Factory.Multiply of 1, 2 and 3 is 6");
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
    }

    #[test]
    fn callback_names_round_trip() {
        for callback in [Callback::Multiply, Callback::Divide] {
            assert_eq!(Callback::from_name(callback.name()), Some(callback));
        }
        assert_eq!(Callback::from_name("Factory.Add"), None);
    }
}
