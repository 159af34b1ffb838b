//! [`CompactQueue`]: the ready jobs of a topic, a few bytes each.
//!
//! A job waiting in a topic is kept as one variable-length record in a ring of bytes rather
//! than as a struct: its id, attempts and publish time as LEB128 varints, its operands zigzag
//! encoded. A lab Pair with operands under a billion takes about 20 bytes instead of the 64 of
//! the struct, which is what lets a million queued jobs fit in the broker's memory budget.
//! Records are pushed at either end (at the back when published, at the front when a failed
//! delivery puts a job back) and popped at the front.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stubs::{Job, Pair, Triplet};

use super::JobId;

/// A job as a topic holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuedJob {
    /// The job's identifier.
    pub id: JobId,
    /// The job.
    pub job: Job,
    /// How many times it has been taken.
    pub attempts: u32,
    /// When it was published, to the microsecond.
    pub published_at: SystemTime,
}

/// The longest record: a tag, three varints of up to 10 bytes and three operands of up to 10.
const MAX_RECORD: usize = 1 + 3 * 10 + 3 * 10;
/// Tag of a Pair record; a Triplet's is 1.
const PAIR: u8 = 0;
const TRIPLET: u8 = 1;
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
        let mut reader = Reader {
            bytes: self.bytes.iter(),
            read: 0,
        };
        let job = reader.record();
        let read = reader.read;
        self.bytes.drain(..read);
        self.len -= 1;
        // Give memory back after a burst: a topic that held a million jobs and drained should
        // not keep their buffer.
        if self.bytes.capacity() > KEEP_SPARE_BYTES && self.bytes.len() < self.bytes.capacity() / 4
        {
            self.bytes.shrink_to(self.bytes.len() * 2);
        }
        Some(job)
    }
}

/// A job as one record, for a store that keeps it elsewhere (a disk).
pub fn to_record(job: &QueuedJob) -> Vec<u8> {
    let mut record = [0u8; MAX_RECORD];
    let length = encode(job, &mut record);
    record[..length].to_vec()
}

/// Reads a record written by [`to_record`]; `None` if it is cut short or malformed, as a record
/// read back from a disk may be.
pub fn from_record(record: &[u8]) -> Option<QueuedJob> {
    let mut bytes = record.iter();
    let mut varint = || {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *bytes.next()?;
            if shift == 63 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    };
    let tag = varint()?;
    let id = varint()?;
    let attempts = u32::try_from(varint()?).ok()?;
    let published_at = UNIX_EPOCH.checked_add(Duration::from_micros(varint()?))?;
    let x = unzigzag(varint()?);
    let y = unzigzag(varint()?);
    let job = match tag {
        0 => Job::Pair(Pair { x, y }),
        1 => Job::Triplet(Triplet {
            x,
            y,
            z: unzigzag(varint()?),
        }),
        _ => return None,
    };
    if bytes.next().is_some() {
        return None;
    }
    Some(QueuedJob {
        id,
        job,
        attempts,
        published_at,
    })
}

fn encode(job: &QueuedJob, out: &mut [u8; MAX_RECORD]) -> usize {
    let mut at = 0;
    let mut put = |value: u64| {
        let mut value = value;
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out[at] = byte;
                at += 1;
                break;
            }
            out[at] = byte | 0x80;
            at += 1;
        }
    };
    let published_us = job
        .published_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros().min(u64::MAX as u128) as u64);
    let (tag, operands): (u8, &[i64]) = match &job.job {
        Job::Pair(Pair { x, y }) => (PAIR, &[*x, *y]),
        Job::Triplet(Triplet { x, y, z }) => (TRIPLET, &[*x, *y, *z]),
    };
    put(u64::from(tag));
    put(job.id);
    put(u64::from(job.attempts));
    put(published_us);
    for &operand in operands {
        put(zigzag(operand));
    }
    at
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

struct Reader<'a> {
    bytes: std::collections::vec_deque::Iter<'a, u8>,
    read: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        // Records are written by `encode` only, so every varint is complete and at most 10 bytes.
        for &byte in self.bytes.by_ref() {
            self.read += 1;
            if shift < 64 {
                value |= u64::from(byte & 0x7f) << shift;
            }
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }

    fn record(&mut self) -> QueuedJob {
        let tag = self.varint() as u8;
        let id = self.varint();
        let attempts = self.varint().min(u64::from(u32::MAX)) as u32;
        let published_at = UNIX_EPOCH + Duration::from_micros(self.varint());
        let x = unzigzag(self.varint());
        let y = unzigzag(self.varint());
        let job = if tag == TRIPLET {
            let z = unzigzag(self.varint());
            Job::Triplet(Triplet { x, y, z })
        } else {
            Job::Pair(Pair { x, y })
        };
        QueuedJob {
            id,
            job,
            attempts,
            published_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            queue.push_back(&QueuedJob {
                id: 1_000_000 + id,
                job: Pair {
                    x: 999_999_999 - id as i64,
                    y: 123_456_789,
                }
                .into(),
                attempts: 0,
                published_at: now,
            });
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
