use super::*;
use redb::{ReadableDatabase, ReadableTable};
use std::time::{Duration, UNIX_EPOCH};
use stubs::Pair;

use super::super::behaviour::{later, take_and_dead_letter, FACTORY};
use super::super::codec::QueuedJob;
use super::table::{mark_from, split_topic, with_topic, DEAD, JOBS, MARKS, NEXT_ID};
use super::writer::{commit, ID_RESERVATION};

/// A store in a fresh temporary folder, removed with the store.
pub(crate) async fn scratch_store() -> DiskStore {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(dir.path()).await;
    store.scratch = Some(dir);
    store
}

/// The store in `dir`, opened or reopened, syncing every commit.
async fn store_in(dir: &std::path::Path) -> DiskStore {
    DiskStore::open(dir, Fsync::Always, 10).await.unwrap()
}

/// A store in `dir` with one topic, `t`, with room for 10 jobs.
async fn store_with_topic(dir: &std::path::Path) -> DiskStore {
    let store = store_in(dir).await;
    store.create_topic("t", 10).await.unwrap();
    store
}

#[tokio::test]
async fn what_was_published_and_not_completed_is_there_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let first_ids;
    {
        let store = store_with_topic(dir.path()).await;
        let mut ids = Vec::new();
        for x in 0..4 {
            ids.push(
                store
                    .publish("t", Pair { x, y: 2 }.into(), later())
                    .await
                    .unwrap(),
            );
        }
        let done = store.take("t").await.unwrap();
        store.complete(&done).await.unwrap();
        take_and_dead_letter(&store, "t", JobError::Overflow).await;
        let _in_flight = store.take("t").await.unwrap();
        first_ids = ids;
        // A last synced write, so that the unsynced settlements before it are on disk too.
        store.create_topic("u", 5).await.unwrap();
    }
    // Dropped, the store joined its writer: the file is free.
    let store = store_in(dir.path()).await;
    assert_eq!(store.topic_names().await, vec!["t", "u"]);
    let counts = store.counts("t").await.unwrap();
    assert_eq!(
        (
            counts.capacity,
            counts.ready,
            counts.failed,
            counts.requeued
        ),
        (10, 2, 1, 1),
        "the job in flight counts as requeued"
    );
    let (in_flight, waiting) = (
        store.take("t").await.unwrap(),
        store.take("t").await.unwrap(),
    );
    assert_eq!(
        (in_flight.id, waiting.id),
        (first_ids[2], first_ids[3]),
        "the job in flight first, in order"
    );
    assert_eq!(
        (in_flight.attempt, waiting.attempt),
        (2, 1),
        "the job in flight was taken once before"
    );
    let dead = store.dead_letters("t").await.unwrap();
    assert_eq!(dead.letters.len(), 1);
    assert_eq!(dead.letters[0].job_id, first_ids[1]);
    assert_eq!(dead.letters[0].factory, FACTORY);
    // New ids go on after the recovered ones.
    let next = store
        .publish("t", Pair { x: 9, y: 9 }.into(), later())
        .await
        .unwrap();
    assert!(next > first_ids[3]);
}

#[tokio::test]
async fn an_undeliverable_job_is_still_a_dead_letter_and_counted_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let undeliverable = JobError::Undeliverable {
        deliveries: 3,
        reason: "connection closed".into(),
    };
    let id = {
        let store = store_with_topic(dir.path()).await;
        let id = store
            .publish("t", Pair { x: 5, y: 0 }.into(), later())
            .await
            .unwrap();
        take_and_dead_letter(&store, "t", undeliverable.clone()).await;
        id
    };
    let store = store_in(dir.path()).await;
    let counts = store.counts("t").await.unwrap();
    assert_eq!(
        (counts.failed, counts.undeliverable, counts.ready),
        (1, 1, 0)
    );
    let dead = store.dead_letters("t").await.unwrap();
    assert_eq!(dead.letters.len(), 1);
    assert_eq!(
        (dead.letters[0].job_id, &dead.letters[0].error),
        (id, &undeliverable)
    );
}

#[tokio::test]
async fn ids_are_not_given_again_after_a_restart_even_once_every_job_is_settled() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let store = store_with_topic(dir.path()).await;
        let mut last = 0;
        for x in 0..3 {
            last = store
                .publish("t", Pair { x, y: 2 }.into(), later())
                .await
                .unwrap();
            let delivery = store.take("t").await.unwrap();
            store.complete(&delivery).await.unwrap();
        }
        last
    };
    let store = store_in(dir.path()).await;
    assert_eq!(store.counts("t").await.unwrap().ready, 0);
    let next = store
        .publish("t", Pair { x: 9, y: 9 }.into(), later())
        .await
        .unwrap();
    assert!(next > last, "{next} after {last}");
}

#[tokio::test]
async fn the_last_settlements_are_written_when_the_store_closes() {
    let dir = tempfile::tempdir().unwrap();
    let kept = {
        let store = store_with_topic(dir.path()).await;
        let (ids, _) = store
            .publish_many(
                "t",
                vec![Pair { x: 1, y: 2 }.into(), Pair { x: 3, y: 4 }.into()],
                later(),
            )
            .await;
        let done = store.take("t").await.unwrap();
        store.complete(&done).await.unwrap();
        ids[1]
    };
    let store = store_in(dir.path()).await;
    let counts = store.counts("t").await.unwrap();
    assert_eq!((counts.ready, counts.requeued), (1, 0));
    assert_eq!(store.take("t").await.unwrap().id, kept);
}

/// A store whose writer is this test: the writes it would commit come out of the receiver.
async fn store_with_a_stalled_writer() -> (DiskStore, mpsc::Receiver<Write>) {
    let mut store = scratch_store().await;
    let (writes, pending) = mpsc::channel();
    // The real writer sees its channel closed and ends.
    drop(std::mem::replace(&mut store.writes, writes));
    (store, pending)
}

type Publish = tokio::task::JoinHandle<(Vec<JobId>, Option<QueueError>)>;

fn spawn_publish(store: &Arc<DiskStore>, jobs: &[Job]) -> Publish {
    let (store, jobs) = (store.clone(), jobs.to_vec());
    tokio::spawn(async move { store.publish_many("u", jobs, later()).await })
}

async fn take_and_complete(store: &DiskStore, jobs: usize) {
    for _ in 0..jobs {
        let delivery = store.take("u").await.unwrap();
        store.complete(&delivery).await.unwrap();
    }
}

/// The answer the stalled writer owes for the next write of a change that `wanted` picks, the
/// writes before it passed over.
async fn next_write(
    pending: &mpsc::Receiver<Write>,
    wanted: fn(&Change) -> bool,
) -> oneshot::Sender<Result<(), String>> {
    loop {
        match pending.try_recv() {
            Ok(Write {
                change,
                done: Some(done),
            }) if wanted(&change) => return done,
            Ok(_) => {}
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

/// The answer the stalled writer owes for the next published batch.
async fn next_batch_write(pending: &mpsc::Receiver<Write>) -> oneshot::Sender<Result<(), String>> {
    next_write(pending, |change| matches!(change, Change::Jobs { .. })).await
}

/// Asserts that `publish` stays unanswered while its batch waits for the stalled writer, then
/// lets the batch's write succeed.
async fn assert_unanswered_until_written(
    publish: &mut Publish,
    pending: &mpsc::Receiver<Write>,
    why: &str,
) {
    let write = next_batch_write(pending).await;
    let waited = tokio::time::timeout(Duration::from_millis(50), publish).await;
    assert!(waited.is_err(), "{why}");
    write.send(Ok(())).unwrap();
}

#[tokio::test]
async fn a_publish_is_answered_once_its_jobs_are_on_disk_or_completed() {
    let (store, pending) = store_with_a_stalled_writer().await;
    let store = Arc::new(store);
    // A topic, as the writer would have stored it.
    store.memory.create_topic("u", 10).await.unwrap();
    lock_topic_ids(&store).insert(Arc::from("u"), 1);
    let jobs: Vec<Job> = vec![Pair { x: 1, y: 2 }.into(), Pair { x: 3, y: 4 }.into()];

    // Completed, but their ids are not reserved on disk yet: answered only by the disk.
    let mut publish = spawn_publish(&store, &jobs);
    take_and_complete(&store, 2).await;
    assert_unanswered_until_written(
        &mut publish,
        &pending,
        "answered with ids that a crash could give again",
    )
    .await;
    assert_eq!(publish.await.unwrap().0.len(), 2);
    store.reserved.store(1 << 20, Ordering::Release);

    // Completed before any commit, ids reserved: answered.
    let publish = spawn_publish(&store, &jobs);
    take_and_complete(&store, 2).await;
    let (ids, refused) = tokio::time::timeout(Duration::from_secs(10), publish)
        .await
        .expect("a publish of completed jobs waits for no disk")
        .unwrap();
    assert_eq!((ids.len(), refused), (2, None));
    drop(next_batch_write(&pending).await);

    // Not completed: answered only once the writer says the jobs are on disk.
    let mut publish = spawn_publish(&store, &jobs);
    let _first = store.take("u").await.unwrap();
    assert_unanswered_until_written(
        &mut publish,
        &pending,
        "answered before its jobs were on disk or completed",
    )
    .await;
    let (ids, refused) = publish.await.unwrap();
    assert_eq!((ids.len(), refused), (2, None));
    assert!(
        store.unconfirmed.0.lock().is_empty(),
        "nothing left tracked"
    );
}

fn lock_topic_ids(
    store: &DiskStore,
) -> parking_lot::RwLockWriteGuard<'_, HashMap<Arc<str>, TopicId>> {
    store.topic_ids.write()
}

#[tokio::test]
async fn with_an_interval_a_job_is_kept_and_synced_by_the_time_the_store_closes() {
    let dir = tempfile::tempdir().unwrap();
    let every = Fsync::Interval(Duration::from_millis(50));
    let id = {
        let store = DiskStore::open(dir.path(), every, 10).await.unwrap();
        store.create_topic("t", 10).await.unwrap();
        store
            .publish("t", Pair { x: 1, y: 2 }.into(), later())
            .await
            .unwrap()
    };
    let store = DiskStore::open(dir.path(), every, 10).await.unwrap();
    assert_eq!(store.take("t").await.unwrap().id, id);
}

#[tokio::test]
async fn with_never_the_jobs_are_synced_when_the_store_closes() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = DiskStore::open(dir.path(), Fsync::Never, 10).await.unwrap();
        store.create_topic("t", 10).await.unwrap();
        store
            .publish("t", Pair { x: 1, y: 2 }.into(), later())
            .await
            .unwrap()
    };
    let store = DiskStore::open(dir.path(), Fsync::Never, 10).await.unwrap();
    assert_eq!(store.take("t").await.unwrap().id, id);
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = store_in(dir.path()).await;
    let second = DiskStore::open(dir.path(), Fsync::Always, 10).await;
    assert!(matches!(second, Err(DiskError::InUse(_))), "{second:?}");
}

/// Runs `total` jobs through a topic of `capacity`, a topic's worth at a time, and returns
/// the data dir's largest size seen along the way, in bytes.
async fn largest_size_running_jobs_through(fsync: Fsync, total: u64, capacity: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), fsync, 10).await.unwrap();
    store.create_topic("t", capacity).await.unwrap();
    let file = dir.path().join(DATABASE_FILE);
    let mut largest = 0;
    let mut completed = 0u64;
    while completed < total {
        let batch: Vec<Job> = (0..capacity as i64)
            .map(|x| Pair { x, y: 2 }.into())
            .collect();
        let (ids, refused) = store.publish_many("t", batch, later()).await;
        assert_eq!((ids.len(), refused), (capacity, None));
        for _ in 0..capacity {
            let delivery = store.take("t").await.unwrap();
            store.complete(&delivery).await.unwrap();
        }
        completed += capacity as u64;
        largest = largest.max(std::fs::metadata(&file).unwrap().len());
    }
    let counts = store.counts("t").await.unwrap();
    assert_eq!(
        (counts.completed, counts.ready, counts.in_flight),
        (total, 0, 0)
    );
    largest
}

#[tokio::test]
async fn disk_use_stays_bounded_by_what_is_queued() {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let largest = largest_size_running_jobs_through(Fsync::Always, 1_000_000, 1_000).await;
    println!(
        "1,000,000 jobs through 1,000: largest {:.1} MiB",
        mib(largest)
    );
    assert!(largest < 4 * 1024 * 1024, "{:.1} MiB", mib(largest));
}

#[tokio::test]
async fn disk_use_stays_bounded_without_a_sync_per_commit_too() {
    // redb reuses the pages that unsynced commits free; were it not to, these would grow
    // with every job.
    for fsync in [Fsync::Never, Fsync::Interval(Duration::from_millis(100))] {
        let largest = largest_size_running_jobs_through(fsync, 200_000, 1_000).await;
        assert!(largest < 4 * 1024 * 1024, "{fsync:?}: {largest} bytes");
    }
}

fn jobs_on_disk(db: &redb::Database) -> Vec<JobId> {
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(JOBS).unwrap();
    table
        .range(..MARKS)
        .unwrap()
        .map(|entry| entry.unwrap().0.value())
        .collect()
}

fn change(change: Change) -> Write {
    Write { change, done: None }
}

fn jobs(ids: &[JobId]) -> Change {
    let record = |id| to_record(&QueuedJob::new(id, Pair { x: 1, y: 2 }.into(), UNIX_EPOCH));
    Change::Jobs {
        topic: 0,
        jobs: ids.iter().map(|&id| (id, record(id))).collect(),
    }
}

#[test]
fn a_job_settled_in_the_group_that_publishes_it_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join(DATABASE_FILE)).unwrap();
    let mut written = Written::default();
    let group = [
        change(jobs(&[1, 2, 3])),
        change(Change::Settled { id: 2 }),
        change(Change::Settled { id: 1 }),
    ];
    commit(&db, &group, true, &mut written).unwrap();
    assert_eq!(jobs_on_disk(&db), vec![3]);
    assert!(written.settled_early.is_empty());
    commit(
        &db,
        &[change(Change::Settled { id: 3 })],
        true,
        &mut written,
    )
    .unwrap();
    assert_eq!(jobs_on_disk(&db), Vec::<JobId>::new());
}

#[test]
fn a_job_settled_before_its_insert_arrives_is_not_written_when_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join(DATABASE_FILE)).unwrap();
    let mut written = Written::default();
    let group = [change(Change::Settled { id: 7 }), change(jobs(&[5, 7]))];
    commit(&db, &group, true, &mut written).unwrap();
    assert_eq!(jobs_on_disk(&db), vec![5]);
    commit(
        &db,
        &[change(Change::Settled { id: 9 })],
        true,
        &mut written,
    )
    .unwrap();
    commit(&db, &[change(jobs(&[8, 9]))], true, &mut written).unwrap();
    assert_eq!(jobs_on_disk(&db), vec![5, 8]);
    assert!(written.settled_early.is_empty());
}

#[test]
fn the_highest_id_taken_only_grows() {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join(DATABASE_FILE)).unwrap();
    let mut written = Written::default();
    let taken = |topic, id| change(Change::Taken { topic, id });
    commit(
        &db,
        &[taken(0, 4), taken(0, 9), taken(1, 2)],
        true,
        &mut written,
    )
    .unwrap();
    commit(&db, &[taken(0, 3)], true, &mut written).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(JOBS).unwrap();
    let marks: Vec<(JobId, JobId)> = table
        .range(MARKS..NEXT_ID)
        .unwrap()
        .map(|entry| {
            let (key, id) = entry.unwrap();
            (key.value() - MARKS, mark_from(id.value()).unwrap())
        })
        .collect();
    assert_eq!(marks, vec![(0, 9), (1, 2)]);
    // Ids up to the highest taken, and a reservation beyond, are never given again.
    let reserved = mark_from(table.get(NEXT_ID).unwrap().unwrap().value()).unwrap();
    assert_eq!(reserved, 9 + 1 + ID_RESERVATION);
    assert_eq!(written.reserved.load(Ordering::Acquire), reserved);
}

#[test]
fn a_topic_number_survives_its_encoding() {
    for topic in [0, 1, 127, 128, 300, u32::MAX] {
        let value = with_topic(topic, b"abc");
        assert_eq!(split_topic(&value), Some((topic, &b"abc"[..])));
    }
    assert_eq!(split_topic(&[0x80, 0x80]), None);
    assert_eq!(
        with_topic(300, b"x"),
        [0xac, 0x02, b'x'],
        "the bytes every broker wrote"
    );
}

#[test]
fn the_disk_keeps_no_more_dead_letters_than_the_limit_oldest_dropped_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join(DATABASE_FILE)).unwrap();
    let mut written = Written {
        dead_letter_limit: 2,
        ..Written::default()
    };
    let dead = |id| {
        change(Change::Dead {
            topic: 0,
            id,
            letter: vec![id as u8],
        })
    };
    commit(&db, &[dead(1), dead(2)], true, &mut written).unwrap();
    commit(&db, &[dead(3)], true, &mut written).unwrap();
    commit(&db, &[dead(4), dead(5), dead(6)], true, &mut written).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(DEAD).unwrap();
    let kept: Vec<JobId> = table
        .iter()
        .unwrap()
        .map(|entry| entry.unwrap().0.value())
        .collect();
    assert_eq!(kept, vec![5, 6]);
    let listed: Vec<JobId> = written.dead_letters[&0].iter().copied().collect();
    assert_eq!(listed, vec![5, 6]);
}

#[tokio::test]
async fn a_record_under_a_key_that_is_not_its_id_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = store_with_topic(dir.path()).await;
        store
            .publish("t", Pair { x: 1, y: 2 }.into(), later())
            .await
            .unwrap();
    }
    {
        // Job 0's record, copied under key 7.
        let db = redb::Database::create(dir.path().join(DATABASE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut jobs = txn.open_table(JOBS).unwrap();
            let record = jobs.get(0).unwrap().unwrap().value().to_vec();
            jobs.insert(7, record.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = store_in(dir.path()).await;
    assert_eq!(
        store.counts("t").await.unwrap().ready,
        1,
        "job 0 once, not twice"
    );
}

#[tokio::test]
async fn a_topic_is_on_disk_before_a_job_can_be_published_to_it() {
    let (store, pending) = store_with_a_stalled_writer().await;
    let store = Arc::new(store);
    let create = tokio::spawn({
        let store = store.clone();
        async move { store.create_topic("t", 10).await }
    });
    let write = next_write(&pending, |change| matches!(change, Change::Topic { .. })).await;
    let refused = store
        .publish("t", Pair { x: 1, y: 2 }.into(), later())
        .await;
    assert_eq!(refused, Err(QueueError::NoSuchTopic("t".into())));
    write.send(Ok(())).unwrap();
    assert_eq!(create.await.unwrap(), Ok(TopicCreation::Created));
    assert!(store.has_topic("t").await);
}

#[tokio::test]
async fn a_publish_dropped_while_it_waits_for_room_still_writes_the_jobs_it_queued() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Arc::new(store_in(dir.path()).await);
        store.create_topic("t", 1).await.unwrap();
        let publish = tokio::spawn({
            let store = store.clone();
            async move {
                let jobs = vec![Pair { x: 1, y: 2 }.into(), Pair { x: 3, y: 4 }.into()];
                store.publish_many("t", jobs, later()).await
            }
        });
        // The first job is queued; the second waits for room.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.counts("t").await.unwrap().ready < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the first job never queued"
            );
            tokio::task::yield_now().await;
        }
        publish.abort();
        assert!(publish.await.unwrap_err().is_cancelled());
        Arc::into_inner(store).expect("the task let go of the store");
    }
    let store = store_in(dir.path()).await;
    assert_eq!(store.counts("t").await.unwrap().ready, 1);
}

#[tokio::test]
async fn a_damaged_data_dir_is_refused_with_its_reason() {
    // A file that is not a database at all.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DATABASE_FILE), vec![0x5a; 64 * 1024]).unwrap();
    match DiskStore::open(dir.path(), Fsync::Always, 10).await {
        Err(DiskError::Unusable { reason, .. }) => assert!(reason.contains("invalid data")),
        other => panic!("a file of garbage was opened: {other:?}"),
    }
    // A database that lost its tail after it was written (redb asserts on it).
    let dir = tempfile::tempdir().unwrap();
    {
        let store = store_in(dir.path()).await;
        store.create_topic("t", 100_000).await.unwrap();
        let (ids, _) = store.publish_many("t", pairs(0, 20_000), later()).await;
        assert_eq!(ids.len(), 20_000);
    }
    let bytes = std::fs::read(dir.path().join(DATABASE_FILE)).unwrap();
    for keep in [bytes.len() / 2, 4096] {
        let cut = tempfile::tempdir().unwrap();
        std::fs::write(cut.path().join(DATABASE_FILE), &bytes[..keep]).unwrap();
        match DiskStore::open(cut.path(), Fsync::Always, 10).await {
            Err(DiskError::Unusable { reason, .. }) => assert!(reason.contains("is damaged")),
            other => panic!("cut to {keep} of {} bytes: {other:?}", bytes.len()),
        }
    }
}

fn pairs(from: i64, count: i64) -> Vec<Job> {
    (from..from + count)
        .map(|x| Pair { x, y: 1 }.into())
        .collect()
}

#[tokio::test]
async fn a_commit_torn_by_a_crash_is_dropped_whole_and_the_commits_before_it_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(DATABASE_FILE);
    let (before, after) = {
        let store = store_in(dir.path()).await;
        store.create_topic("t", 100_000).await.unwrap();
        let (ids, _) = store.publish_many("t", pairs(0, 1_000), later()).await;
        assert_eq!(ids.len(), 1_000);
        let before = std::fs::read(&file).unwrap();
        let (ids, _) = store.publish_many("t", pairs(1_000, 5_000), later()).await;
        assert_eq!(ids.len(), 5_000);
        (before, std::fs::read(&file).unwrap())
    };
    // A crash in the second commit's sync: its header reached the disk, its pages did not.
    let mut torn = before;
    torn.resize(after.len(), 0);
    torn[..4096].copy_from_slice(&after[..4096]);
    std::fs::write(&file, &torn).unwrap();
    let store = store_in(dir.path()).await;
    assert_eq!(
        store.counts("t").await.unwrap().ready,
        1_000,
        "the first commit's jobs, none of the second's"
    );
}
