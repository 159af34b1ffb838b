//! [`CompactQueue`]: the ready jobs of a topic, a few bytes each.
//!
//! A job waiting in a topic is kept as its record (see `codec`) in a ring of bytes rather than
//! as a struct, which is what lets a million queued jobs fit in the broker's memory budget.
//! Records are pushed at either end (at the back when published, at the front when a failed
//! delivery puts a job back) and popped at the front.

use std::collections::VecDeque;

use super::codec::{encode, read_record, QueuedJob, MAX_RECORD};

/// Below this many bytes of spare room the queue keeps its buffer when it shrinks.
const KEEP_SPARE_BYTES: usize = 64 * 1024;

/// Ready jobs, in order, encoded.
#[derive(Debug, Default)]
pub struct CompactQueue {
    bytes: VecDeque<u8>,
    len: usize,
}

impl CompactQueue {
    /// How many jobs it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no job.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a job.
    pub fn push_back(&mut self, job: &QueuedJob) {
        let mut record = [0u8; MAX_RECORD];
        let length = encode(job, &mut record);
        self.bytes.extend(&record[..length]);
        self.len += 1;
    }

    /// Puts a job at the head.
    pub fn push_front(&mut self, job: &QueuedJob) {
        let mut record = [0u8; MAX_RECORD];
        let length = encode(job, &mut record);
        for &byte in record[..length].iter().rev() {
            self.bytes.push_front(byte);
        }
        self.len += 1;
    }

    /// Takes the job at the head.
    pub fn pop_front(&mut self) -> Option<QueuedJob> {
        if self.len == 0 {
            return None;
        }
        let mut bytes = self.bytes.iter();
        // Records are written by `encode` only: every one reads back whole.
        let job = read_record(&mut bytes);
        let read = self.bytes.len() - bytes.len();
        self.bytes.drain(..read);
        self.len -= 1;
        // Give memory back after a burst: a topic that held a million jobs and drained should
        // not keep their buffer.
        if self.bytes.capacity() > KEEP_SPARE_BYTES && self.bytes.len() < self.bytes.capacity() / 4
        {
            self.bytes.shrink_to(self.bytes.len() * 2);
        }
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    use stubs::{Job, Pair, Triplet};

    use crate::queue::JobId;

    fn job(id: JobId, job: Job, attempts: u32) -> QueuedJob {
        QueuedJob {
            id,
            job,
            attempts,
            // Whole microseconds: the queue keeps publish times to the microsecond.
            published_at: UNIX_EPOCH + Duration::from_micros(1_764_000_000_123_456 + id % 1_000),
        }
    }

    #[test]
    fn jobs_come_out_in_order_and_unchanged_even_at_the_extremes() {
        let jobs = [
            job(0, Pair { x: 3, y: 4 }.into(), 0),
            job(
                u64::MAX,
                Pair {
                    x: i64::MIN,
                    y: i64::MAX,
                }
                .into(),
                u32::MAX,
            ),
            job(
                7,
                Triplet {
                    x: -1,
                    y: 0,
                    z: 999_999,
                }
                .into(),
                2,
            ),
            job(
                1 << 40,
                Pair {
                    x: -999_999_999,
                    y: 999_999_999,
                }
                .into(),
                1,
            ),
        ];
        let mut queue = CompactQueue::default();
        for queued in &jobs {
            queue.push_back(queued);
        }
        assert_eq!(queue.len(), 4);
        for queued in &jobs {
            assert_eq!(queue.pop_front().as_ref(), Some(queued));
        }
        assert!(queue.is_empty());
        assert_eq!(queue.pop_front(), None);
    }

    #[test]
    fn a_job_put_back_comes_out_first() {
        let mut queue = CompactQueue::default();
        queue.push_back(&job(1, Pair { x: 1, y: 1 }.into(), 0));
        queue.push_back(&job(2, Pair { x: 2, y: 2 }.into(), 0));
        let first = queue.pop_front().unwrap();
        queue.push_front(&QueuedJob {
            attempts: 1,
            ..first
        });
        queue.push_front(&job(0, Triplet { x: 5, y: 6, z: 7 }.into(), 3));
        let ids: Vec<(JobId, u32)> = std::iter::from_fn(|| queue.pop_front())
            .map(|queued| (queued.id, queued.attempts))
            .collect();
        assert_eq!(ids, vec![(0, 3), (1, 1), (2, 0)]);
    }

    #[test]
    fn a_lab_pair_takes_about_twenty_bytes_and_a_drained_queue_gives_its_memory_back() {
        let mut queue = CompactQueue::default();
        let now = SystemTime::now();
        for id in 0..100_000u64 {
            let job = Pair {
                x: 999_999_999 - id as i64,
                y: 123_456_789,
            };
            queue.push_back(&QueuedJob::new(1_000_000 + id, job.into(), now));
        }
        let per_job = queue.bytes.len() as f64 / 100_000.0;
        assert!(per_job <= 22.0, "{per_job} bytes a job");
        while queue.pop_front().is_some() {}
        assert!(
            queue.bytes.capacity() <= KEEP_SPARE_BYTES,
            "{}",
            queue.bytes.capacity()
        );
    }
}
