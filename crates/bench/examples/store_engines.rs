//! Two embedded storage engines on the durable broker's workload: which one to build
//! `--data-dir` on. Both are measured the same way, in this process, on this machine's disk:
//!
//! - group commits: each commit stores the jobs of `GROUP` publishes that arrived together and
//!   removes `GROUP` completed jobs, and is synced to disk before it returns (a publish is
//!   acknowledged only then), with about 1,000 jobs queued throughout (W2's buffer);
//!   jobs/s and the commit latency, which is what a publisher waits for its acknowledgement;
//! - disk: bytes on disk for 1,000,000 queued jobs, and after the group-commit run, which has
//!   queued and removed 200,000 jobs (disk use must follow what is queued, not what went through);
//! - recovery: opening the data dir and reading the 1,000,000 jobs back in order.
//!
//! Run: `cargo run --release -p bench --example store_engines -- [DIR]` (default: a temporary
//! folder under /tmp; it needs a few hundred MiB).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Publishes that share one commit: W2's 32 publishers.
const GROUP: u64 = 32;
/// Jobs through the group-commit run.
const THROUGH: u64 = 200_000;
/// Jobs queued while it runs.
const QUEUED: u64 = 1_000;
/// Jobs queued for the disk and recovery figures.
const MANY: u64 = 1_000_000;

/// A job as the broker would store it: about the 20 bytes of a compact record.
fn record(seq: u64) -> [u8; 20] {
    let mut value = [0u8; 20];
    value[..8].copy_from_slice(&seq.to_le_bytes());
    value[8..16].copy_from_slice(&(999_999_937u64.wrapping_mul(seq + 1)).to_le_bytes());
    value[16..].copy_from_slice(&(seq as u32).to_le_bytes());
    value
}

trait Engine {
    const NAME: &'static str;
    fn open(dir: &Path) -> Self;
    /// One synced commit: `insert` new jobs, `remove` done ones.
    fn commit(&self, insert: std::ops::Range<u64>, remove: std::ops::Range<u64>);
    /// Many jobs in large, unsynced commits, then one sync: to fill the store quickly.
    fn fill(&self, jobs: std::ops::Range<u64>);
    /// Reads every job back in order; how many.
    fn read_all(&self) -> u64;
}

struct Fjall {
    db: fjall::Database,
    jobs: fjall::Keyspace,
}

impl Engine for Fjall {
    const NAME: &'static str = "fjall 3";

    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir).open().unwrap();
        let jobs = db
            .keyspace("jobs", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        Self { db, jobs }
    }

    fn commit(&self, insert: std::ops::Range<u64>, remove: std::ops::Range<u64>) {
        let mut batch = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        for seq in insert {
            batch.insert(&self.jobs, seq.to_be_bytes(), record(seq));
        }
        for seq in remove {
            batch.remove(&self.jobs, seq.to_be_bytes());
        }
        batch.commit().unwrap();
    }

    fn fill(&self, jobs: std::ops::Range<u64>) {
        let mut batch = self.db.batch();
        for seq in jobs {
            batch.insert(&self.jobs, seq.to_be_bytes(), record(seq));
            if batch.len() == 10_000 {
                batch.commit().unwrap();
                batch = self.db.batch();
            }
        }
        batch.commit().unwrap();
        self.db.persist(fjall::PersistMode::SyncAll).unwrap();
    }

    fn read_all(&self) -> u64 {
        let mut count = 0;
        for item in self.jobs.iter() {
            let (_key, value) = item.into_inner().unwrap();
            assert_eq!(value.len(), 20);
            count += 1;
        }
        count
    }
}

const JOBS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("jobs");

struct Redb {
    db: redb::Database,
}

impl Engine for Redb {
    const NAME: &'static str = "redb 3";

    fn open(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let db = redb::Database::create(dir.join("jobs.redb")).unwrap();
        Self { db }
    }

    fn commit(&self, insert: std::ops::Range<u64>, remove: std::ops::Range<u64>) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(redb::Durability::Immediate).unwrap();
        {
            let mut table = txn.open_table(JOBS).unwrap();
            for seq in insert {
                table.insert(seq, record(seq).as_slice()).unwrap();
            }
            for seq in remove {
                table.remove(seq).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn fill(&self, jobs: std::ops::Range<u64>) {
        let txn = self.db.begin_write().unwrap();
        {
            let mut table = txn.open_table(JOBS).unwrap();
            for seq in jobs {
                table.insert(seq, record(seq).as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn read_all(&self) -> u64 {
        use redb::{ReadableDatabase, ReadableTable};
        let txn = self.db.begin_read().unwrap();
        let table = txn.open_table(JOBS).unwrap();
        let mut count = 0;
        for item in table.iter().unwrap() {
            let (_key, value) = item.unwrap();
            assert_eq!(value.value().len(), 20);
            count += 1;
        }
        count
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn measure<E: Engine>(root: &Path) {
    // Group commits with about QUEUED jobs queued.
    let dir = root.join(format!("{}-commits", E::NAME.replace(' ', "")));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = E::open(&dir);
    engine.fill(0..QUEUED);
    let mut latencies = Vec::with_capacity((THROUGH / GROUP) as usize);
    let started = Instant::now();
    let mut next = QUEUED;
    while next < QUEUED + THROUGH {
        let done = next - QUEUED;
        let commit = Instant::now();
        engine.commit(next..next + GROUP, done..done + GROUP);
        latencies.push(commit.elapsed());
        next += GROUP;
    }
    let elapsed = started.elapsed();
    drop(engine);
    let after_run = dir_bytes(&dir);
    latencies.sort();
    println!(
        "{:<7} group commits of {GROUP}: {:>7.0} jobs/s, commit p50 {:>5} µs, p99 {:>5} µs; disk after {THROUGH} jobs through {QUEUED} queued: {:.1} MiB",
        E::NAME,
        THROUGH as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_micros(),
        percentile(&latencies, 0.99).as_micros(),
        after_run as f64 / 1048576.0,
    );

    // 1,000,000 queued: disk, then recovery.
    let dir = root.join(format!("{}-million", E::NAME.replace(' ', "")));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = E::open(&dir);
    engine.fill(0..MANY);
    drop(engine);
    let bytes = dir_bytes(&dir);
    let started = Instant::now();
    let engine = E::open(&dir);
    let count = engine.read_all();
    let recovery = started.elapsed();
    assert_eq!(count, MANY);
    println!(
        "{:<7} {MANY} jobs queued: {:.1} bytes a job on disk ({:.1} MiB); open and read back in order: {} ms",
        E::NAME,
        bytes as f64 / MANY as f64,
        bytes as f64 / 1048576.0,
        recovery.as_millis(),
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(root.join(format!("{}-commits", E::NAME.replace(' ', ""))));
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let root: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("store-engines-{}", std::process::id()))
        });
    std::fs::create_dir_all(&root).unwrap();
    measure::<Fjall>(&root);
    measure::<Redb>(&root);
    let _ = std::fs::remove_dir(&root);
}
