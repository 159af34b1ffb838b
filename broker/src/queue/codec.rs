//! One encoding of a job and of a dead letter, wherever a store keeps them: in a topic's ready
//! jobs in memory, in the disk store's tables, and in JetStream's streams.
//!
//! A job is one variable-length record: a tag (0 a Pair, 1 a Triplet), its id, attempts and
//! publish time in microseconds as LEB128 varints, then its operands zigzag encoded. A lab Pair
//! with operands under a billion takes about 20 bytes instead of the 64 of the struct, which is
//! what lets a million queued jobs fit in the broker's memory budget.
//!
//! A dead letter is its job's record (attempts 0, published at the epoch) after a byte giving
//! its length, then the error (a code: 0 division by zero, 1 overflow, 2 another reason, then
//! the reason; 3 undeliverable, then the deliveries and the reason), when it failed, and the
//! factory. Bytes already written by a broker must stay readable: change none of this.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stubs::{DeadLetter, Job, JobError, Pair, Triplet};

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

impl QueuedJob {
    /// A job just published: never taken yet.
    pub fn new(id: JobId, job: Job, published_at: SystemTime) -> Self {
        Self {
            id,
            job,
            attempts: 0,
            published_at,
        }
    }
}

/// The longest record: a tag, three varints of up to 10 bytes and three operands of up to 10.
pub const MAX_RECORD: usize = 1 + 3 * 10 + 3 * 10;
/// Tag of a Pair record.
const PAIR: u8 = 0;
/// Tag of a Triplet record.
const TRIPLET: u8 = 1;

/// Writes `job` as one record at the start of `out`: how many bytes it took.
pub fn encode(job: &QueuedJob, out: &mut [u8; MAX_RECORD]) -> usize {
    let mut at = 0;
    let mut put = |value: u64| at += put_varint(value, &mut out[at..]);
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

/// A job as one record, for a store that keeps it elsewhere (a disk, a stream).
pub fn to_record(job: &QueuedJob) -> Vec<u8> {
    let mut record = [0u8; MAX_RECORD];
    let length = encode(job, &mut record);
    record[..length].to_vec()
}

/// Reads a record written by [`to_record`]; `None` if it is cut short, malformed or followed by
/// more bytes, as a record read back from a disk or a stream may be.
pub fn from_record(record: &[u8]) -> Option<QueuedJob> {
    let mut bytes = record.iter();
    let job = read_record(&mut bytes)?;
    bytes.next().is_none().then_some(job)
}

/// Reads the record at the start of `bytes`, leaving them just past it.
pub fn read_record<'a>(bytes: &mut impl Iterator<Item = &'a u8>) -> Option<QueuedJob> {
    let mut varint = || read_varint(&mut *bytes);
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
    Some(QueuedJob {
        id,
        job,
        attempts,
        published_at,
    })
}

/// Writes `value` as a LEB128 varint at the start of `out`: how many bytes it took (at most 10).
pub fn put_varint(value: u64, out: &mut [u8]) -> usize {
    let mut value = value;
    let mut at = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out[at] = byte;
            return at + 1;
        }
        out[at] = byte | 0x80;
        at += 1;
    }
}

/// Reads a varint written by [`put_varint`]; `None` if it is cut short or does not fit 64 bits.
pub fn read_varint<'a>(bytes: &mut impl Iterator<Item = &'a u8>) -> Option<u64> {
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
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// A dead letter as stored on disk and in JetStream.
pub fn dead_letter_record(letter: &DeadLetter) -> Vec<u8> {
    let mut bytes = to_record(&QueuedJob::new(letter.job_id, letter.job, UNIX_EPOCH));
    let record_length = bytes.len() as u8;
    bytes.insert(0, record_length);
    match &letter.error {
        JobError::DivideByZero => bytes.push(0),
        JobError::Overflow => bytes.push(1),
        JobError::Other { reason } => {
            bytes.push(2);
            push_reason(&mut bytes, reason);
        }
        JobError::Undeliverable { deliveries, reason } => {
            bytes.push(3);
            bytes.extend_from_slice(&deliveries.to_le_bytes());
            push_reason(&mut bytes, reason);
        }
    }
    bytes.extend_from_slice(&letter.failed_at_unix_ms.to_le_bytes());
    bytes.extend_from_slice(letter.factory.as_bytes());
    bytes
}

/// Reads a dead letter written by [`dead_letter_record`]; `None` if it is not one.
pub fn dead_letter_from(bytes: &[u8]) -> Option<DeadLetter> {
    let (&record_length, rest) = bytes.split_first()?;
    let (record, rest) = rest.split_at_checked(usize::from(record_length))?;
    let queued = from_record(record)?;
    let (&code, rest) = rest.split_first()?;
    let (error, rest) = match code {
        0 => (JobError::DivideByZero, rest),
        1 => (JobError::Overflow, rest),
        2 => {
            let (reason, rest) = reason_from(rest)?;
            (JobError::Other { reason }, rest)
        }
        3 => {
            let (deliveries, rest) = rest.split_at_checked(4)?;
            let deliveries = u32::from_le_bytes(deliveries.try_into().ok()?);
            let (reason, rest) = reason_from(rest)?;
            (JobError::Undeliverable { deliveries, reason }, rest)
        }
        _ => return None,
    };
    let (failed_at, factory) = rest.split_at_checked(8)?;
    Some(DeadLetter {
        job_id: queued.id,
        job: queued.job,
        error,
        factory: String::from_utf8(factory.to_vec()).ok()?,
        failed_at_unix_ms: u64::from_le_bytes(failed_at.try_into().ok()?),
    })
}

/// Appends `reason` with its length in two bytes, cut to what they can say.
fn push_reason(bytes: &mut Vec<u8>, reason: &str) {
    let reason = truncated(reason, usize::from(u16::MAX));
    bytes.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    bytes.extend_from_slice(reason.as_bytes());
}

/// A reason written by [`push_reason`], and the bytes after it.
fn reason_from(bytes: &[u8]) -> Option<(String, &[u8])> {
    let (length, rest) = bytes.split_at_checked(2)?;
    let length = u16::from_le_bytes(length.try_into().ok()?);
    let (reason, rest) = rest.split_at_checked(usize::from(length))?;
    Some((String::from_utf8(reason.to_vec()).ok()?, rest))
}

/// The longest start of `text` that is at most `limit` bytes and ends on a character.
fn truncated(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
