//! [`Bounded`]: a topic's dead letters, the newest kept up to a limit.

use std::collections::VecDeque;
use std::time::SystemTime;

use stubs::{DeadLetter, Job, JobError};

use super::JobId;

/// How many dead letters a topic keeps by default: enough to see what went wrong, small enough
/// that a flood of bad jobs costs a bounded amount of memory (about 100 KiB a topic).
pub const DEFAULT_DEAD_LETTER_LIMIT: usize = 1_000;

/// The newest items up to a limit, oldest first: a flood of failing jobs must not grow a topic
/// without end, and the newest failures say most about what is wrong now.
#[derive(Clone, Debug)]
pub struct Bounded<T> {
    items: VecDeque<T>,
    limit: usize,
    /// Items dropped to keep within the limit.
    dropped: u64,
}

impl<T> Bounded<T> {
    /// An empty list keeping up to `limit` items.
    pub fn new(limit: usize) -> Self {
        Self {
            items: VecDeque::new(),
            limit,
            dropped: 0,
        }
    }

    /// Appends `item`: the item dropped to keep within the limit, the oldest (or `item` itself
    /// when the limit is 0).
    pub fn push(&mut self, item: T) -> Option<T> {
        if self.limit == 0 {
            self.dropped += 1;
            return Some(item);
        }
        let oldest = if self.items.len() >= self.limit {
            self.dropped += 1;
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        oldest
    }

    /// How many items it keeps now.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// How many items were dropped to keep within the limit.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The items kept, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

/// The dead letter of job `job_id`, failed now with `error` at `factory`.
pub fn letter(job_id: JobId, job: Job, error: JobError, factory: &str) -> DeadLetter {
    DeadLetter {
        job_id,
        job,
        error,
        factory: factory.to_owned(),
        failed_at_unix_ms: SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_first_and_a_limit_of_zero_keeps_none() {
        let mut list = Bounded::new(2);
        assert_eq!(
            (list.push(1), list.push(2), list.push(3)),
            (None, None, Some(1))
        );
        assert_eq!(list.iter().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!((list.len(), list.dropped()), (2, 1));
        let mut none = Bounded::new(0);
        assert_eq!(none.push(7), Some(7));
        assert_eq!((none.len(), none.dropped()), (0, 1));
    }
}
