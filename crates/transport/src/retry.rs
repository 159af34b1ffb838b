//! [`Retry`]: the one way the clients try again what failed for now, be it a dial to a broker
//! that is not back yet or a request its store could not keep. The pauses double from
//! [`RETRY_MIN_DELAY`] up to [`RETRY_MAX_DELAY`], with jitter so that the clients of a
//! restarted broker do not all come back at the same instant; the tries end when their limit
//! has passed, and at once when the program is asked to stop.
//!
//! Callers do not decide what is worth another try: they ask the error
//! ([`stubs::BrokerError::is_transient`], [`crate::LinkError::is_transient`], or [`transient`]
//! for a whole answer).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use stubs::BrokerError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::LinkError;

/// The first pause before trying again.
pub const RETRY_MIN_DELAY: Duration = Duration::from_millis(100);
/// The longest pause between two tries: a broker that came back is found within this long.
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// The tries of one thing that failed for now.
#[derive(Debug)]
pub struct Retry {
    pauses: ExponentialBackoff,
    /// When the tries end; `None` tries until `shutdown`.
    deadline: Option<Instant>,
    shutdown: CancellationToken,
}

/// Why there is no next try.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// The limit has passed.
    #[error("tried for as long as allowed")]
    GaveUp,
    /// The program is stopping.
    #[error("the program is stopping")]
    Stopped,
}

impl Retry {
    /// Tries for `limit` from now (for ever with `None`), until `shutdown` is cancelled.
    pub fn new(limit: Option<Duration>, shutdown: CancellationToken) -> Self {
        let pauses = ExponentialBuilder::default()
            .with_min_delay(RETRY_MIN_DELAY)
            .with_max_delay(RETRY_MAX_DELAY)
            .with_jitter()
            .without_max_times()
            .build();
        Self {
            pauses,
            deadline: limit.map(|limit| Instant::now() + limit),
            shutdown,
        }
    }

    /// Waits before the next try, telling `notify` how long first (for a log line): an error
    /// when the limit has passed, or the program is stopping (at once, even in the middle of
    /// the pause).
    pub async fn wait(&mut self, notify: impl FnOnce(Duration)) -> Result<(), Ended> {
        let pause = self.next_pause()?;
        notify(pause);
        self.sleep(pause).await
    }

    /// The pause before the next try, shortened to what is left of the limit; an error when
    /// the limit has passed or the program is stopping.
    fn next_pause(&mut self) -> Result<Duration, Ended> {
        // The limit first: a failure with no time left for another try is the answer, even
        // to a program that is stopping.
        let left = self.left();
        if left.is_some_and(|left| left.is_zero()) {
            return Err(Ended::GaveUp);
        }
        if self.shutdown.is_cancelled() {
            return Err(Ended::Stopped);
        }
        let pause = self.pauses.next().unwrap_or(RETRY_MAX_DELAY);
        Ok(left.map_or(pause, |left| pause.min(left)))
    }

    /// What is left of the limit, if there is one.
    pub fn left(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// Sleeps `pause`, or less if the program is asked to stop meanwhile.
    async fn sleep(&self, pause: Duration) -> Result<(), Ended> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Ended::Stopped),
            _ = tokio::time::sleep(pause) => Ok(()),
        }
    }

    /// Waits until the program is asked to stop: for a future that must end then, e.g. a dial.
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await
    }
}

/// A broker's answer to a request, as a [`crate::BrokerLink`] gives it.
pub type Answer<T> = Result<Result<T, BrokerError>, LinkError>;

/// The last answer to a request sent again while it failed for now
/// ([`crate::BrokerLink::ask`]).
#[derive(Debug)]
pub struct Settled<T> {
    /// The last answer.
    pub answer: Answer<T>,
    /// Why the tries ended while the answer still failed for now; `None` when it is final.
    pub ended: Option<Ended>,
}

/// Whether a broker's answer may be different if the request is made again a little later.
pub fn transient<T>(answer: &Answer<T>) -> bool {
    transient_failure(answer).is_some()
}

/// What failed in `answer` when it may not fail a little later; `None` when it is final.
pub(crate) fn transient_failure<T>(answer: &Answer<T>) -> Option<&dyn std::fmt::Display> {
    match answer {
        Ok(Err(refusal)) if refusal.is_transient() => Some(refusal),
        Err(error) if error.is_transient() => Some(error),
        Ok(_) | Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pauses_grow_up_to_the_longest_and_end_with_the_limit() {
        let limit = Duration::from_secs(10);
        let mut retry = Retry::new(Some(limit), CancellationToken::new());
        let started = Instant::now();
        let mut longest = Duration::ZERO;
        loop {
            match retry.next_pause() {
                Ok(pause) => {
                    longest = longest.max(pause);
                    retry.sleep(pause).await.unwrap();
                }
                Err(ended) => {
                    assert_eq!(ended, Ended::GaveUp);
                    break;
                }
            }
        }
        // The last pause is cut to the limit (the timer counts whole milliseconds).
        let waited = started.elapsed();
        assert!(waited >= limit, "{waited:?}");
        assert!(waited <= limit + Duration::from_millis(10), "{waited:?}");
        // Jitter adds at most one more pause's worth.
        assert!(longest <= RETRY_MAX_DELAY * 2, "{longest:?}");
        assert!(longest >= RETRY_MAX_DELAY, "{longest:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_pause_at_once_and_every_try_after_it() {
        let shutdown = CancellationToken::new();
        let mut retry = Retry::new(None, shutdown.clone());
        let started = Instant::now();
        let pause = retry.next_pause().unwrap();
        let stop = {
            let shutdown = shutdown.clone();
            async move {
                tokio::time::sleep(pause / 2).await;
                shutdown.cancel();
            }
        };
        let (slept, ()) = tokio::join!(retry.sleep(pause), stop);
        assert_eq!(slept, Err(Ended::Stopped));
        assert!(
            started.elapsed() < pause,
            "{:?} of {pause:?}",
            started.elapsed()
        );
        assert_eq!(retry.next_pause(), Err(Ended::Stopped));
    }

    #[test]
    fn only_a_store_failure_or_a_deadline_is_worth_another_try() {
        let stored: Result<Result<u64, BrokerError>, LinkError> = Ok(Ok(1));
        let failed: Result<Result<u64, BrokerError>, LinkError> =
            Ok(Err(BrokerError::StorageFailed {
                reason: "no space left on device".into(),
            }));
        let unknown: Result<Result<u64, BrokerError>, LinkError> =
            Ok(Err(BrokerError::NoSuchTopic {
                topic: "multiply".into(),
            }));
        let late: Result<Result<u64, BrokerError>, LinkError> =
            Err(LinkError::Rpc(tarpc::client::RpcError::DeadlineExceeded));
        let stopping: Result<Result<u64, BrokerError>, LinkError> = Err(LinkError::Stopped);
        assert!(!transient(&stored));
        assert!(transient(&failed));
        assert!(!transient(&unknown));
        assert!(transient(&late));
        assert!(!transient(&stopping));
    }
}
