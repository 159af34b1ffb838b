//! The behaviour every [`JobStore`] must show, written once and run against each store by
//! [`store_behaviour_tests!`], so that the lab behaves the same whichever store holds its jobs.
//! The steps these tests take ([`later`], [`take_and_dead_letter`]) serve each store's own
//! tests too.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use stubs::{Job, JobError, Pair};

use super::{Delivery, JobStore, QueueError, TopicCreation};

fn job(x: i64) -> Job {
    Pair { x, y: 1 }.into()
}

/// Longer than any store needs to act, short in paused test time.
const PATIENCE: Duration = Duration::from_secs(1);

/// What frees room in a topic: taking a job (the memory and disk stores count ready jobs
/// against the capacity) or settling it (JetStream keeps a job in its stream until it is
/// acknowledged, so a job in flight still takes room).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    FreedByTake,
    FreedBySettling,
}

/// A publish deadline no test reaches.
pub fn later() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(3_600)
}

/// The factory that the tests' jobs fail at.
pub const FACTORY: &str = "127.0.0.1:1";

/// Takes the job at the head of `topic` and dead-letters it with `error`, as the broker does
/// when the factory at [`FACTORY`] fails it.
pub async fn take_and_dead_letter(store: &impl JobStore, topic: &str, error: JobError) -> Delivery {
    let delivery = store.take(topic).await.unwrap();
    store.dead_letter(&delivery, error, FACTORY).await.unwrap();
    delivery
}

pub async fn creating_a_topic_twice_keeps_the_first_capacity(store: impl JobStore) {
    assert_eq!(store.create_topic("t", 3).await, Ok(TopicCreation::Created));
    assert_eq!(
        store.create_topic("t", 9).await,
        Ok(TopicCreation::Existing { capacity: 3 })
    );
    assert_eq!(store.counts("t").await.unwrap().capacity, 3);
    assert!(store.has_topic("t").await);
    assert!(!store.has_topic("u").await);
}

pub async fn a_missing_topic_is_reported(store: impl JobStore) {
    let missing = Err(QueueError::NoSuchTopic("none".into()));
    assert_eq!(
        store.publish("none", job(1), later()).await,
        missing.clone().map(|_: ()| 0)
    );
    assert_eq!(store.take("none").await.map(|_| ()), missing.clone());
    assert_eq!(store.counts("none").await.map(|_| ()), missing);
}

pub async fn jobs_are_taken_in_publish_order(store: impl JobStore) {
    store.create_topic("t", 10).await.unwrap();
    let mut ids = Vec::new();
    for x in 0..5 {
        ids.push(store.publish("t", job(x), later()).await.unwrap());
    }
    for (x, id) in ids.into_iter().enumerate() {
        let delivery = store.take("t").await.unwrap();
        assert_eq!(
            (delivery.id, delivery.job, delivery.attempt),
            (id, job(x as i64), 1)
        );
        store.complete(&delivery).await.unwrap();
    }
    let counts = store.counts("t").await.unwrap();
    assert_eq!(
        (
            counts.published,
            counts.completed,
            counts.ready,
            counts.in_flight
        ),
        (5, 5, 0, 0)
    );
}

pub async fn a_publish_waits_for_room_and_goes_through_when_a_job_is_taken(
    store: impl JobStore,
    room: Room,
) {
    let store = Arc::new(store);
    store.create_topic("t", 1).await.unwrap();
    store.publish("t", job(1), later()).await.unwrap();
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.publish("t", job(2), later()).await }
    });
    tokio::time::sleep(PATIENCE).await;
    assert!(
        !waiting.is_finished(),
        "the topic is full, so the publish waits"
    );
    let first = store.take("t").await.unwrap();
    assert_eq!(first.job, job(1));
    if room == Room::FreedBySettling {
        tokio::time::sleep(PATIENCE).await;
        assert!(!waiting.is_finished(), "the job in flight still takes room");
        store.complete(&first).await.unwrap();
    }
    waiting.await.unwrap().unwrap();
    assert_eq!(store.take("t").await.unwrap().job, job(2));
}

pub async fn a_cancelled_publish_leaves_no_job(store: impl JobStore) {
    store.create_topic("t", 1).await.unwrap();
    store.publish("t", job(1), later()).await.unwrap();
    let timed_out = tokio::time::timeout(PATIENCE, store.publish("t", job(2), later())).await;
    assert!(timed_out.is_err());
    let counts = store.counts("t").await.unwrap();
    assert_eq!((counts.ready, counts.published), (1, 1));
    let first = store.take("t").await.unwrap();
    store.complete(&first).await.unwrap();
    let nothing = tokio::time::timeout(PATIENCE, store.take("t")).await;
    assert!(nothing.is_err(), "the cancelled job never appears");
}

pub async fn a_cancelled_take_takes_nothing(store: impl JobStore) {
    store.create_topic("t", 2).await.unwrap();
    assert!(tokio::time::timeout(PATIENCE, store.take("t"))
        .await
        .is_err());
    store.publish("t", job(7), later()).await.unwrap();
    let counts = store.counts("t").await.unwrap();
    assert_eq!((counts.ready, counts.in_flight), (1, 0));
    assert_eq!(store.take("t").await.unwrap().job, job(7));
}

pub async fn a_publish_still_waiting_at_its_deadline_is_refused_and_stores_nothing(
    store: impl JobStore,
    room: Room,
) {
    store.create_topic("t", 1).await.unwrap();
    store.publish("t", job(1), later()).await.unwrap();
    let started = tokio::time::Instant::now();
    let refused = store.publish("t", job(2), started + PATIENCE).await;
    assert_eq!(
        refused,
        Err(QueueError::Full {
            topic: "t".into(),
            capacity: 1
        })
    );
    assert!(started.elapsed() >= PATIENCE, "it waited for room first");
    let counts = store.counts("t").await.unwrap();
    assert_eq!((counts.ready, counts.published), (1, 1), "no phantom job");
    // With room, the same deadline is no obstacle.
    let first = store.take("t").await.unwrap();
    if room == Room::FreedBySettling {
        store.complete(&first).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    assert!(store.publish("t", job(3), deadline).await.is_ok());
}

pub async fn a_requeued_job_goes_to_the_head_whatever_the_capacity(
    store: impl JobStore,
    room: Room,
) {
    // Where a job in flight takes room, the second job needs a second place.
    let capacity = match room {
        Room::FreedByTake => 1,
        Room::FreedBySettling => 2,
    };
    store.create_topic("t", capacity).await.unwrap();
    store.publish("t", job(1), later()).await.unwrap();
    let first = store.take("t").await.unwrap();
    store.publish("t", job(2), later()).await.unwrap();
    store.requeue(&first).await.unwrap();
    let counts = store.counts("t").await.unwrap();
    assert_eq!(
        (counts.ready, counts.requeued),
        (2, 1),
        "over capacity, never lost"
    );
    let again = store.take("t").await.unwrap();
    assert_eq!((again.id, again.job, again.attempt), (first.id, job(1), 2));
    assert_eq!(store.take("t").await.unwrap().job, job(2));
}

pub async fn the_jobs_of_a_failed_call_go_back_together_in_their_order(store: impl JobStore) {
    store.create_topic("t", 10).await.unwrap();
    for x in 0..4 {
        store.publish("t", job(x), later()).await.unwrap();
    }
    let taken = [
        store.take("t").await.unwrap(),
        store.take("t").await.unwrap(),
        store.take("t").await.unwrap(),
    ];
    let completed = taken[0].clone();
    store.complete(&completed).await.unwrap();
    // One of them no longer in flight: none goes back.
    assert!(matches!(
        store.requeue_all(&taken).await,
        Err(QueueError::NotInFlight { .. })
    ));
    assert_eq!(store.counts("t").await.unwrap().in_flight, 2);
    store.requeue_all(&taken[1..]).await.unwrap();
    let jobs: Vec<Job> = [
        store.take("t").await.unwrap(),
        store.take("t").await.unwrap(),
        store.take("t").await.unwrap(),
    ]
    .iter()
    .map(|delivery| delivery.job)
    .collect();
    assert_eq!(jobs, vec![job(1), job(2), job(3)]);
    assert_eq!(store.counts("t").await.unwrap().requeued, 2);
}

pub async fn a_delivery_is_settled_once(store: impl JobStore) {
    store.create_topic("t", 4).await.unwrap();
    for x in 0..3 {
        store.publish("t", job(x), later()).await.unwrap();
    }
    let done = store.take("t").await.unwrap();
    let failed = store.take("t").await.unwrap();
    let back = store.take("t").await.unwrap();
    store.complete(&done).await.unwrap();
    store
        .dead_letter(&failed, JobError::DivideByZero, FACTORY)
        .await
        .unwrap();
    store.requeue(&back).await.unwrap();
    for settled in [&done, &failed, &back] {
        assert!(matches!(
            store.complete(settled).await,
            Err(QueueError::NotInFlight { .. })
        ));
    }
    let counts = store.counts("t").await.unwrap();
    assert_eq!(
        (
            counts.completed,
            counts.failed,
            counts.requeued,
            counts.ready,
            counts.in_flight
        ),
        (1, 1, 1, 1, 0)
    );
}

pub async fn each_delivery_of_a_job_counts_and_an_undeliverable_job_is_counted_apart(
    store: impl JobStore,
) {
    // The broker's delivery limit reads `attempt`: every take of a job put back counts.
    store.create_topic("t", 4).await.unwrap();
    let id = store.publish("t", job(1), later()).await.unwrap();
    for attempt in 1..=3 {
        let delivery = store.take("t").await.unwrap();
        assert_eq!((delivery.id, delivery.attempt), (id, attempt));
        if attempt < 3 {
            store.requeue(&delivery).await.unwrap();
            continue;
        }
        let undeliverable = JobError::Undeliverable {
            deliveries: attempt,
            reason: "connection closed".into(),
        };
        store
            .dead_letter(&delivery, undeliverable, FACTORY)
            .await
            .unwrap();
    }
    store.publish("t", job(2), later()).await.unwrap();
    take_and_dead_letter(&store, "t", JobError::DivideByZero).await;
    let counts = store.counts("t").await.unwrap();
    assert_eq!(
        (
            counts.failed,
            counts.undeliverable,
            counts.requeued,
            counts.ready,
            counts.in_flight
        ),
        (2, 1, 2, 0, 0)
    );
    let dead = store.dead_letters("t").await.unwrap();
    let errors: Vec<String> = dead
        .letters
        .iter()
        .map(|letter| letter.error.to_string())
        .collect();
    assert_eq!(
        errors,
        [
            "delivered 3 times; every call failed: connection closed",
            "division by zero"
        ]
    );
    assert_eq!((dead.letters[0].job_id, dead.total), (id, 2));
}

pub async fn each_job_goes_to_exactly_one_of_many_takers(store: impl JobStore) {
    const JOBS: u64 = 200;
    let store = Arc::new(store);
    store.create_topic("t", 8).await.unwrap();
    let mut takers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        takers.spawn(async move {
            let mut taken = Vec::new();
            while let Ok(Ok(delivery)) = tokio::time::timeout(PATIENCE, store.take("t")).await {
                store.complete(&delivery).await.unwrap();
                taken.push(delivery.id);
            }
            taken
        });
    }
    let mut published = HashSet::new();
    for x in 0..JOBS {
        published.insert(store.publish("t", job(x as i64), later()).await.unwrap());
    }
    let mut taken = Vec::new();
    while let Some(ids) = takers.join_next().await {
        taken.extend(ids.unwrap());
    }
    assert_eq!(taken.len() as u64, JOBS, "no job taken twice");
    assert_eq!(taken.into_iter().collect::<HashSet<_>>(), published);
}

/// Runs every behaviour above against the store that `$make` builds, in paused time.
macro_rules! store_behaviour_tests {
    ($module:ident, paused: $paused:tt, room: $room:ident, $make:expr) => {
        mod $module {
            use crate::queue::behaviour as b;
            #[tokio::test(start_paused = $paused)]
            async fn creating_a_topic_twice_keeps_the_first_capacity() {
                b::creating_a_topic_twice_keeps_the_first_capacity($make).await
            }
            #[tokio::test(start_paused = $paused)]
            async fn a_missing_topic_is_reported() {
                b::a_missing_topic_is_reported($make).await
            }
            #[tokio::test(start_paused = $paused)]
            async fn jobs_are_taken_in_publish_order() {
                b::jobs_are_taken_in_publish_order($make).await
            }
            #[tokio::test(start_paused = $paused)]
            async fn a_publish_waits_for_room_and_goes_through_when_a_job_is_taken() {
                b::a_publish_waits_for_room_and_goes_through_when_a_job_is_taken(
                    $make,
                    b::Room::$room,
                )
                .await
            }
            #[tokio::test(start_paused = $paused)]
            async fn a_cancelled_publish_leaves_no_job() {
                b::a_cancelled_publish_leaves_no_job($make).await
            }
            #[tokio::test(start_paused = $paused)]
            async fn a_cancelled_take_takes_nothing() {
                b::a_cancelled_take_takes_nothing($make).await
            }
            #[tokio::test(start_paused = $paused)]
            async fn a_publish_still_waiting_at_its_deadline_is_refused_and_stores_nothing() {
                b::a_publish_still_waiting_at_its_deadline_is_refused_and_stores_nothing(
                    $make,
                    b::Room::$room,
                )
                .await
            }
            #[tokio::test(start_paused = $paused)]
            async fn a_requeued_job_goes_to_the_head_whatever_the_capacity() {
                b::a_requeued_job_goes_to_the_head_whatever_the_capacity($make, b::Room::$room)
                    .await
            }
            #[tokio::test(start_paused = $paused)]
            async fn the_jobs_of_a_failed_call_go_back_together_in_their_order() {
                b::the_jobs_of_a_failed_call_go_back_together_in_their_order($make).await
            }
            #[tokio::test(start_paused = $paused)]
            async fn a_delivery_is_settled_once() {
                b::a_delivery_is_settled_once($make).await
            }
            #[tokio::test(start_paused = $paused)]
            async fn each_delivery_of_a_job_counts_and_an_undeliverable_job_is_counted_apart() {
                b::each_delivery_of_a_job_counts_and_an_undeliverable_job_is_counted_apart($make)
                    .await
            }
            #[tokio::test(start_paused = $paused)]
            async fn each_job_goes_to_exactly_one_of_many_takers() {
                b::each_job_goes_to_exactly_one_of_many_takers($make).await
            }
        }
    };
}

store_behaviour_tests!(
    memory_store,
    paused: true,
    room: FreedByTake,
    crate::queue::MemoryStore::new()
);
// On real time: the disk store's writes finish on a thread of their own, which paused time
// would not wait for.
store_behaviour_tests!(
    disk_store,
    paused: false,
    room: FreedByTake,
    crate::queue::disk::tests::scratch_store().await
);
// On real time, against a nats-server of each test's own.
#[cfg(feature = "jetstream")]
store_behaviour_tests!(
    jetstream_store,
    paused: false,
    room: FreedBySettling,
    crate::queue::jetstream::tests::scratch_store().await
);
