//! The stores against a plain model: random sequences of what the broker asks of a store
//! (create, publish, publish many, take, complete, dead-letter, requeue, requeue several,
//! publishes and takes cancelled while they wait, and for the disk store close and reopen),
//! each answer checked against a model of a few `VecDeque`s.
//!
//! What the model holds the stores to:
//! - every job is in exactly one of ready, in flight, completed or dead, and ids are unique;
//! - ready jobs keep FIFO order, except requeued ones, which go to the head in the order they
//!   were taken;
//! - a publish is refused with `Full` at the capacity, and a requeue goes in whatever it;
//! - a cancelled publish stores nothing and a cancelled take takes nothing;
//! - the dead-letter list keeps the newest, up to its limit;
//! - nothing acknowledged is lost across a reopen: every job not settled is ready again, in
//!   the order of its id, and the dead letters kept come back in the order their jobs failed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use broker::queue::{Delivery, DiskStore, Fsync, JobId, JobStore, MemoryStore, QueueError};
use broker::queue::{TopicCounts, TopicCreation};
use proptest::prelude::*;
use stubs::{Job, JobError, Pair};
use tokio::time::Instant;

/// Topics the operations pick from: few, so that they meet.
const TOPICS: [&str; 2] = ["a", "b"];
/// Dead letters kept per topic: small, so that sequences go past it.
const DEAD_LETTER_LIMIT: usize = 3;
/// Long enough for a store to act on a future it can answer at once; a future still pending
/// after it is waiting, and is cancelled by the timeout.
const PENDING: Duration = Duration::from_millis(5);

/// One thing asked of a store. Indices pick among what exists when the operation runs.
#[derive(Clone, Debug)]
enum Op {
    Create {
        topic: usize,
        capacity: usize,
    },
    Publish {
        topic: usize,
        x: i64,
    },
    PublishMany {
        topic: usize,
        count: usize,
    },
    /// A publish to a full topic, given up while it waits for room.
    CancelledPublish {
        topic: usize,
    },
    /// A take: of the head, or given up while it waits on an empty topic.
    Take {
        topic: usize,
    },
    Complete {
        pick: usize,
    },
    DeadLetter {
        pick: usize,
    },
    Requeue {
        pick: usize,
    },
    /// Several deliveries of one topic back at once, in the order picked.
    RequeueAll {
        topic: usize,
        picks: Vec<usize>,
    },
    /// Close the store and open it again (the disk store; the memory store has nothing to
    /// reopen and ignores it).
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let topic = 0..TOPICS.len();
    prop_oneof![
        1 => (topic.clone(), 1usize..4).prop_map(|(topic, capacity)| Op::Create { topic, capacity }),
        4 => (topic.clone(), -50i64..50).prop_map(|(topic, x)| Op::Publish { topic, x }),
        1 => (topic.clone(), 1usize..5).prop_map(|(topic, count)| Op::PublishMany { topic, count }),
        1 => topic.clone().prop_map(|topic| Op::CancelledPublish { topic }),
        4 => topic.clone().prop_map(|topic| Op::Take { topic }),
        2 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
        1 => any::<usize>().prop_map(|pick| Op::DeadLetter { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Requeue { pick }),
        1 => (topic, proptest::collection::vec(any::<usize>(), 1..4))
            .prop_map(|(topic, picks)| Op::RequeueAll { topic, picks }),
        1 => Just(Op::Reopen),
    ]
}

/// One topic as the model sees it.
#[derive(Debug, Default)]
struct Topic {
    capacity: usize,
    ready: VecDeque<(JobId, Job)>,
    /// Dead letters' ids, oldest first: all of them since the store was opened, and those it
    /// kept before.
    dead: Vec<JobId>,
    /// The highest id ever taken from the topic.
    highest_taken: Option<JobId>,
    /// Counters since the store was last opened: a reopen starts the store's own afresh, from
    /// the jobs it finds.
    counted: Counted,
}

#[derive(Debug, Default)]
struct Counted {
    published: u64,
    completed: u64,
    failed: u64,
    requeued: u64,
}

/// The model: topics, the deliveries in flight (as the store handed them out), and every id
/// with where it is now.
#[derive(Default)]
struct Model {
    topics: HashMap<&'static str, Topic>,
    in_flight: Vec<Delivery>,
    /// Times each job was taken since it was published or the store was reopened.
    taken: HashMap<JobId, u32>,
    /// Jobs whose attempts the model no longer knows (they lived through a reopen).
    reopened: HashSet<JobId>,
    ids: HashSet<JobId>,
    completed: HashSet<JobId>,
    /// Every job dead-lettered, with when it failed as the store stamped it.
    failed_at: HashMap<JobId, u64>,
}

impl Model {
    fn is_full(&self, topic: &str) -> bool {
        let topic = &self.topics[topic];
        topic.ready.len() >= topic.capacity
    }

    fn published(&mut self, topic: &'static str, id: JobId, job: Job) {
        assert!(self.ids.insert(id), "id {id} was given twice");
        let topic = self.topics.get_mut(topic).expect("exists");
        topic.ready.push_back((id, job));
        topic.counted.published += 1;
    }

    /// Takes the delivery chosen by `pick` out of the model's in-flight list.
    fn settle(&mut self, pick: usize) -> Option<Delivery> {
        if self.in_flight.is_empty() {
            return None;
        }
        Some(self.in_flight.remove(pick % self.in_flight.len()))
    }

    /// Back at the head of their topic, the first of `deliveries` first.
    fn requeued(&mut self, deliveries: &[Delivery]) {
        for delivery in deliveries.iter().rev() {
            let topic = self.topics.get_mut(&*delivery.topic).expect("exists");
            topic.ready.push_front((delivery.id, delivery.job));
            topic.counted.requeued += 1;
        }
    }

    /// What a reopened store holds: every job not settled is ready, in the order of its id.
    fn reopened(&mut self) {
        for delivery in std::mem::take(&mut self.in_flight) {
            self.topics
                .get_mut(&*delivery.topic)
                .expect("exists")
                .ready
                .push_back((delivery.id, delivery.job));
        }
        let failed_at = &self.failed_at;
        for topic in self.topics.values_mut() {
            topic.ready.make_contiguous().sort_by_key(|(id, _)| *id);
            // Only the newest dead letters were kept, and they come back in the order their
            // jobs failed, to the millisecond.
            let kept = topic.dead.len().saturating_sub(DEAD_LETTER_LIMIT);
            topic.dead.drain(..kept);
            topic.dead.sort_by_key(|id| (failed_at[id], *id));
            // A reopened store counts what it found: its jobs as published, those it had
            // handed out (at or below the highest id taken) as requeued, the dead letters it
            // kept as failed.
            let handed_out = topic
                .ready
                .iter()
                .filter(|(id, _)| topic.highest_taken.is_some_and(|highest| *id <= highest))
                .count();
            topic.counted = Counted {
                published: topic.ready.len() as u64,
                requeued: handed_out as u64,
                failed: topic.dead.len() as u64,
                ..Counted::default()
            };
            self.reopened.extend(topic.ready.iter().map(|(id, _)| *id));
        }
    }
}

/// A store under test, and how to open it again.
trait Subject: Sized {
    type Store: JobStore;
    fn store(&self) -> &Self::Store;
    async fn reopen(self) -> Self;
}

struct Memory(MemoryStore);

impl Subject for Memory {
    type Store = MemoryStore;
    fn store(&self) -> &MemoryStore {
        &self.0
    }
    async fn reopen(self) -> Self {
        self
    }
}

struct Disk {
    store: DiskStore,
    dir: tempfile::TempDir,
}

impl Disk {
    async fn open(dir: tempfile::TempDir) -> Self {
        let store = DiskStore::open(dir.path(), Fsync::Never, DEAD_LETTER_LIMIT)
            .await
            .expect("open the data dir");
        Self { store, dir }
    }
}

impl Subject for Disk {
    type Store = DiskStore;
    fn store(&self) -> &DiskStore {
        &self.store
    }
    async fn reopen(self) -> Self {
        let Disk { store, dir } = self;
        // Dropped, the store commits and syncs what it holds: a clean close.
        drop(store);
        Disk::open(dir).await
    }
}

/// A job the model can tell apart from others by its operands.
fn job(x: i64, y: i64) -> Job {
    Pair { x, y }.into()
}

/// Runs `ops` against `subject` and the model, checking every answer and, after each
/// operation, every topic's figures; at the end, drains every topic in the model's order.
async fn check<S: Subject>(mut subject: S, ops: Vec<Op>) {
    let mut model = Model::default();
    let mut serial = 0i64;
    for op in ops {
        serial += 1;
        match op {
            Op::Create { topic, capacity } => {
                let name = TOPICS[topic];
                let created = subject.store().create_topic(name, capacity).await;
                let expected = match model.topics.get(name) {
                    Some(existing) => TopicCreation::Existing {
                        capacity: existing.capacity,
                    },
                    None => {
                        model.topics.insert(
                            name,
                            Topic {
                                capacity,
                                ..Topic::default()
                            },
                        );
                        TopicCreation::Created
                    }
                };
                assert_eq!(created, Ok(expected), "create {name} with {capacity}");
            }
            Op::Publish { topic, x } => {
                let name = TOPICS[topic];
                let job = job(x, serial);
                let published = subject.store().publish(name, job, Instant::now()).await;
                if !model.topics.contains_key(name) {
                    assert_eq!(published, Err(QueueError::NoSuchTopic(name.into())));
                } else if model.is_full(name) {
                    assert!(
                        matches!(published, Err(QueueError::Full { .. })),
                        "a publish to the full topic {name}: {published:?}"
                    );
                } else {
                    let id = published.unwrap_or_else(|error| panic!("publish to {name}: {error}"));
                    model.published(name, id, job);
                }
            }
            Op::PublishMany { topic, count } => {
                let name = TOPICS[topic];
                let jobs: Vec<Job> = (0..count as i64).map(|i| job(i, serial)).collect();
                let (ids, refusal) = subject
                    .store()
                    .publish_many(name, jobs.clone(), Instant::now())
                    .await;
                let Some(existing) = model.topics.get(name) else {
                    assert_eq!(ids, Vec::<JobId>::new());
                    assert_eq!(refusal, Some(QueueError::NoSuchTopic(name.into())));
                    continue;
                };
                let room = existing.capacity.saturating_sub(existing.ready.len());
                assert_eq!(
                    ids.len(),
                    count.min(room),
                    "publish {count} into {room} places"
                );
                assert_eq!(
                    matches!(refusal, Some(QueueError::Full { .. })),
                    count > room,
                    "{refusal:?}"
                );
                for (id, job) in ids.into_iter().zip(jobs) {
                    model.published(name, id, job);
                }
            }
            Op::CancelledPublish { topic } => {
                let name = TOPICS[topic];
                if !model.topics.contains_key(name) || !model.is_full(name) {
                    continue;
                }
                let far = Instant::now() + Duration::from_secs(3_600);
                let waited = tokio::time::timeout(
                    PENDING,
                    subject.store().publish(name, job(0, serial), far),
                )
                .await;
                assert!(
                    waited.is_err(),
                    "a publish to a full topic waits: {waited:?}"
                );
            }
            Op::Take { topic } => {
                let name = TOPICS[topic];
                let Some(existing) = model.topics.get_mut(name) else {
                    let taken = subject.store().take(name).await;
                    assert_eq!(taken, Err(QueueError::NoSuchTopic(name.into())));
                    continue;
                };
                let Some((id, job)) = existing.ready.pop_front() else {
                    let waited = tokio::time::timeout(PENDING, subject.store().take(name)).await;
                    assert!(
                        waited.is_err(),
                        "a take from an empty topic waits: {waited:?}"
                    );
                    continue;
                };
                let delivery = subject
                    .store()
                    .take(name)
                    .await
                    .unwrap_or_else(|error| panic!("take from {name}: {error}"));
                assert_eq!((delivery.id, delivery.job), (id, job), "the head of {name}");
                assert_eq!(&*delivery.topic, name);
                existing.highest_taken = existing.highest_taken.max(Some(id));
                let taken = model.taken.entry(id).or_default();
                *taken += 1;
                if !model.reopened.contains(&id) {
                    assert_eq!(delivery.attempt, *taken, "attempts of job {id}");
                }
                model.in_flight.push(delivery);
            }
            Op::Complete { pick } => {
                let Some(delivery) = model.settle(pick) else {
                    continue;
                };
                assert_eq!(subject.store().complete(&delivery).await, Ok(()));
                assert!(model.completed.insert(delivery.id));
                model
                    .topics
                    .get_mut(&*delivery.topic)
                    .unwrap()
                    .counted
                    .completed += 1;
                // Settled once: a second settle is refused.
                assert!(matches!(
                    subject.store().complete(&delivery).await,
                    Err(QueueError::NotInFlight { .. })
                ));
            }
            Op::DeadLetter { pick } => {
                let Some(delivery) = model.settle(pick) else {
                    continue;
                };
                let error = if pick % 2 == 0 {
                    JobError::DivideByZero
                } else {
                    JobError::Overflow
                };
                let settled = subject
                    .store()
                    .dead_letter(&delivery, error, "127.0.0.1:8031")
                    .await;
                assert_eq!(settled, Ok(()));
                let letters = subject.store().dead_letters(&delivery.topic).await;
                let letter = letters
                    .expect("dead letters")
                    .letters
                    .into_iter()
                    .find(|letter| letter.job_id == delivery.id)
                    .expect("the newest dead letter is kept");
                model
                    .failed_at
                    .insert(delivery.id, letter.failed_at_unix_ms);
                let topic = model.topics.get_mut(&*delivery.topic).unwrap();
                topic.dead.push(delivery.id);
                topic.counted.failed += 1;
            }
            Op::Requeue { pick } => {
                let Some(delivery) = model.settle(pick) else {
                    continue;
                };
                assert_eq!(subject.store().requeue(&delivery).await, Ok(()));
                model.requeued(&[delivery]);
            }
            Op::RequeueAll { topic, picks } => {
                let name = TOPICS[topic];
                let mut chosen = Vec::new();
                for pick in picks {
                    let of_topic: Vec<usize> = (0..model.in_flight.len())
                        .filter(|&at| &*model.in_flight[at].topic == name)
                        .collect();
                    if of_topic.is_empty() {
                        break;
                    }
                    chosen.push(model.in_flight.remove(of_topic[pick % of_topic.len()]));
                }
                if chosen.is_empty() {
                    continue;
                }
                assert_eq!(subject.store().requeue_all(&chosen).await, Ok(()));
                model.requeued(&chosen);
            }
            Op::Reopen => {
                subject = subject.reopen().await;
                if std::any::type_name::<S>().ends_with("Disk") {
                    model.reopened();
                }
            }
        }
        compare(subject.store(), &model).await;
    }
    drain(subject.store(), &mut model).await;
}

/// Every topic's figures and dead letters against the model's.
async fn compare(store: &impl JobStore, model: &Model) {
    let mut names: Vec<&str> = model.topics.keys().copied().collect();
    names.sort();
    assert_eq!(store.topic_names().await, names);
    for (name, topic) in &model.topics {
        let counts: TopicCounts = store.counts(name).await.expect("counts");
        let in_flight = model
            .in_flight
            .iter()
            .filter(|delivery| &*delivery.topic == *name)
            .count();
        assert_eq!(
            (counts.capacity, counts.ready, counts.in_flight),
            (topic.capacity, topic.ready.len(), in_flight),
            "capacity, ready and in flight of {name}"
        );
        let counted = &topic.counted;
        assert_eq!(
            (
                counts.published,
                counts.completed,
                counts.failed,
                counts.requeued
            ),
            (
                counted.published,
                counted.completed,
                counted.failed,
                counted.requeued
            ),
            "published, completed, failed and requeued of {name} since the store was opened"
        );
        let letters = store.dead_letters(name).await.expect("dead letters");
        let kept: Vec<JobId> = letters.letters.iter().map(|letter| letter.job_id).collect();
        let newest = &topic.dead[topic.dead.len().saturating_sub(DEAD_LETTER_LIMIT)..];
        assert_eq!(kept, newest, "the newest dead letters of {name}");
    }
}

/// Takes every ready job, which must come in the model's order, and settles everything.
async fn drain(store: &impl JobStore, model: &mut Model) {
    for (name, topic) in &mut model.topics {
        while let Some((id, job)) = topic.ready.pop_front() {
            let delivery = store.take(name).await.expect("take");
            assert_eq!((delivery.id, delivery.job), (id, job), "draining {name}");
            model.in_flight.push(delivery);
        }
    }
    for delivery in std::mem::take(&mut model.in_flight) {
        assert_eq!(store.complete(&delivery).await, Ok(()));
        assert!(model.completed.insert(delivery.id));
    }
    for name in model.topics.keys() {
        let counts = store.counts(name).await.expect("counts");
        assert_eq!((counts.ready, counts.in_flight), (0, 0), "{name} drained");
    }
    // Every id given is completed or dead, and never both.
    let dead: HashSet<JobId> = model.failed_at.keys().copied().collect();
    assert!(model.completed.is_disjoint(&dead));
    let settled: HashSet<JobId> = model.completed.union(&dead).copied().collect();
    assert_eq!(settled, model.ids);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_memory_store_behaves_as_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        runtime().block_on(check(
            Memory(MemoryStore::with_dead_letter_limit(DEAD_LETTER_LIMIT)),
            ops,
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn the_disk_store_behaves_as_the_model_across_reopens(
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        runtime().block_on(async {
            let dir = tempfile::tempdir().expect("a temporary dir");
            check(Disk::open(dir).await, ops).await;
        });
    }
}
