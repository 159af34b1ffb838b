use std::time::Instant;

use futures::StreamExt;
use stubs::{Factory, Job, JobError, JobReport, Pair};
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};

use super::*;
use crate::outcome::Outcome;
use crate::queue::MemoryStore;

#[tokio::test]
async fn ready_jobs_go_in_one_call_and_a_failed_call_puts_them_all_back_in_order() {
    let store = Arc::new(Store::from(MemoryStore::new()));
    store.create_topic("t", 100).await.unwrap();
    let mut ids = Vec::new();
    for x in 0..5 {
        ids.push(
            store
                .publish(
                    "t",
                    Pair { x, y: 1 }.into(),
                    tokio::time::Instant::now() + Duration::from_secs(60),
                )
                .await
                .unwrap(),
        );
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let calls: Arc<Mutex<Vec<usize>>> = Arc::default();
    let server = TestFactory::Slow(calls.clone());
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        BaseChannel::with_defaults(transport::framed(stream))
            .execute(server.serve())
            .for_each_concurrent(None, |call| call)
            .await;
    });
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let client = FactoryLink::Tarpc(TarpcFactory::new(stream.into()));

    let dispatcher = Dispatcher {
        store: store.clone(),
        topic: Arc::from("t"),
        callback: Callback::Multiply,
        factory: Arc::from(address.to_string()),
        client,
        prefetch: 8,
        batches: true,
        call_timeout: Duration::from_millis(200),
        max_deliveries: None,
        observer: Arc::new(|_| {}),
        stop: CancellationToken::new(),
        topic_metrics: Arc::new(TopicMetrics::default()),
        subscriber_metrics: Arc::new(SubscriberMetrics::new(8, stubs::Protocol::Tarpc)),
    };
    let end = dispatcher.run().await;
    assert!(
        matches!(&end, DispatcherEnd::FactoryFailed(reason) if reason.contains("no reply")),
        "{end:?}"
    );
    assert_eq!(*calls.lock(), vec![5], "one call for the five jobs");

    let counts = store.counts("t").await.unwrap();
    assert_eq!((counts.ready, counts.in_flight, counts.requeued), (5, 0, 5));
    let mut again = Vec::new();
    for _ in 0..5 {
        let delivery = store.take("t").await.unwrap();
        assert_eq!(delivery.attempt, 2);
        again.push(delivery.id);
    }
    assert_eq!(again, ids, "back at the head in the order they had");
}

/// How long a test waits for a condition before it fails.
const WAIT: Duration = Duration::from_secs(10);
/// How often a test looks at the store while it waits.
const POLL: Duration = Duration::from_millis(10);

type Calls = Arc<Mutex<Vec<Vec<Job>>>>;
type Outcomes = Arc<Mutex<Vec<Outcome>>>;

/// The factories of these tests, each recording its calls.
#[derive(Clone)]
enum TestFactory {
    /// Records the size of each call and answers none in time.
    Slow(Arc<Mutex<Vec<usize>>>),
    /// Divides, but its connection closes on a zero divisor, as a Go factory's process ends
    /// on one. It records the jobs of every call.
    Fragile {
        /// Cancelled to close this connection.
        dies: CancellationToken,
        calls: Calls,
    },
}

impl TestFactory {
    /// The answers to one call, whichever procedure it called.
    async fn answer(&self, jobs: Vec<Job>) -> Vec<Result<JobReport, JobError>> {
        let (dies, calls) = match self {
            TestFactory::Slow(sizes) => {
                sizes.lock().push(jobs.len());
                tokio::time::sleep(Duration::from_secs(60)).await;
                return Vec::new();
            }
            TestFactory::Fragile { dies, calls } => (dies, calls),
        };
        calls.lock().push(jobs.clone());
        if jobs
            .iter()
            .any(|job| matches!(job, Job::Pair(Pair { y: 0, .. })))
        {
            dies.cancel();
            std::future::pending::<()>().await;
        }
        jobs.into_iter()
            .map(|job| match job {
                Job::Pair(Pair { x, y }) => Ok(JobReport { result: x / y }),
                Job::Triplet(_) => Err(JobError::Overflow),
            })
            .collect()
    }

    /// The answer to a call of one job.
    async fn one(self, job: Job) -> Result<JobReport, JobError> {
        let answer = self.answer(vec![job]).await.pop();
        answer.unwrap_or(Err(JobError::Overflow))
    }
}

impl Factory for TestFactory {
    async fn multiply(self, _: Context, job: Job) -> Result<JobReport, JobError> {
        self.one(job).await
    }
    async fn divide(self, _: Context, job: Job) -> Result<JobReport, JobError> {
        self.one(job).await
    }
    async fn multiply_batch(self, _: Context, jobs: Vec<Job>) -> Vec<Result<JobReport, JobError>> {
        self.answer(jobs).await
    }
    async fn divide_batch(self, _: Context, jobs: Vec<Job>) -> Vec<Result<JobReport, JobError>> {
        self.answer(jobs).await
    }
}

/// Serves a fragile [`TestFactory`] on every connection to a new loopback port: its address, and
/// the jobs of every call it gets.
async fn fragile_factory() -> (std::net::SocketAddr, Calls) {
    fragile_factory_closed_by(CancellationToken::new()).await
}

/// [`fragile_factory`], whose connections all close, as its process's would in dying, when
/// `closes` is cancelled.
async fn fragile_factory_closed_by(closes: CancellationToken) -> (std::net::SocketAddr, Calls) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let calls = Calls::default();
    let recorded = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let dies = closes.child_token();
            let factory = TestFactory::Fragile {
                dies: dies.clone(),
                calls: recorded.clone(),
            };
            tokio::spawn(async move {
                let serving = BaseChannel::with_defaults(transport::framed(stream))
                    .execute(factory.serve())
                    .for_each_concurrent(None, |call| call);
                // Dropped, the connection closes with its calls unanswered.
                tokio::select! {
                    _ = serving => {}
                    _ = dies.cancelled() => {}
                }
            });
        }
    });
    (address, calls)
}

/// A new subscription of the factory at `address` to topic `t` of `store`, on a connection
/// of its own, calling `Factory.Divide`.
async fn subscription(
    store: &Arc<Store>,
    address: std::net::SocketAddr,
    prefetch: u32,
    max_deliveries: Option<NonZeroU32>,
    outcomes: &Outcomes,
) -> Dispatcher {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let client = FactoryLink::Tarpc(TarpcFactory::new(stream.into()));
    let outcomes = outcomes.clone();
    Dispatcher {
        store: store.clone(),
        topic: Arc::from("t"),
        callback: Callback::Divide,
        factory: Arc::from(address.to_string()),
        client,
        prefetch,
        batches: prefetch > 1,
        call_timeout: WAIT,
        max_deliveries,
        observer: Arc::new(move |outcome| outcomes.lock().push(outcome.clone())),
        stop: CancellationToken::new(),
        topic_metrics: Arc::default(),
        subscriber_metrics: Arc::new(SubscriberMetrics::new(prefetch, stubs::Protocol::Tarpc)),
    }
}

/// Runs `dispatcher` until a call fails, as one must within [`WAIT`]: why it failed.
async fn until_a_call_fails(dispatcher: Dispatcher) -> String {
    match tokio::time::timeout(WAIT, dispatcher.run()).await {
        Ok(DispatcherEnd::FactoryFailed(reason)) => reason,
        other => panic!("the subscription ended otherwise: {other:?}"),
    }
}

/// Waits until topic `t` of `store` has `completed` jobs completed.
async fn wait_until_completed(store: &Store, completed: u64) {
    let deadline = Instant::now() + WAIT;
    while store.counts("t").await.unwrap().completed < completed {
        assert!(
            Instant::now() < deadline,
            "{completed} jobs were not completed within {WAIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `dispatcher` until topic `t` has `completed` jobs completed, then stops it.
async fn until_completed(dispatcher: Dispatcher, completed: u64) {
    let (store, stop) = (dispatcher.store.clone(), dispatcher.stop.clone());
    let running = tokio::spawn(dispatcher.run());
    wait_until_completed(&store, completed).await;
    stop.cancel();
    assert_eq!(running.await.unwrap(), DispatcherEnd::Stopped);
}

async fn store_with(jobs: &[Pair]) -> (Arc<Store>, Vec<u64>) {
    let store = Arc::new(Store::from(MemoryStore::new()));
    store.create_topic("t", 10).await.unwrap();
    let mut ids = Vec::new();
    for &pair in jobs {
        let room_by = tokio::time::Instant::now() + WAIT;
        ids.push(store.publish("t", pair.into(), room_by).await.unwrap());
    }
    (store, ids)
}

#[tokio::test]
async fn a_job_whose_calls_keep_failing_is_dead_lettered_on_its_last_allowed_delivery() {
    let poison = Pair { x: 5, y: 0 };
    let (store, ids) = store_with(&[Pair { x: 10, y: 2 }, poison, Pair { x: 9, y: 3 }]).await;
    let (address, _) = fragile_factory().await;
    let outcomes = Outcomes::default();
    let limit = NonZeroU32::new(3);

    let mut reason = String::new();
    for _ in 0..3 {
        reason = until_a_call_fails(subscription(&store, address, 1, limit, &outcomes).await).await;
    }
    until_completed(subscription(&store, address, 1, limit, &outcomes).await, 2).await;

    let counts = store.counts("t").await.unwrap();
    assert_eq!(
        (
            counts.completed,
            counts.failed,
            counts.undeliverable,
            counts.requeued,
            counts.ready,
            counts.in_flight
        ),
        (2, 1, 1, 2, 0, 0)
    );
    let dead = store.dead_letters("t").await.unwrap();
    assert_eq!(dead.letters.len(), 1);
    assert_eq!(dead.letters[0].job_id, ids[1]);
    assert_eq!(
        dead.letters[0].error,
        JobError::Undeliverable {
            deliveries: 3,
            reason: reason.clone()
        }
    );
    let lines: Vec<String> = outcomes
        .lock()
        .iter()
        .filter(|outcome| !matches!(outcome, Outcome::Requeued { .. }))
        .map(|outcome| outcome.to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "Factory.Divide of 10 and 2 is 5".to_owned(),
            format!("Factory.Divide of 5 and 0 dead-lettered: delivered 3 times; every call failed: {reason}"),
            "Factory.Divide of 9 and 3 is 3".to_owned(),
        ]
    );
}

#[tokio::test]
async fn with_no_limit_a_job_whose_calls_keep_failing_always_goes_back() {
    let (store, ids) = store_with(&[Pair { x: 5, y: 0 }]).await;
    let (address, calls) = fragile_factory().await;
    let outcomes = Outcomes::default();
    for _ in 0..6 {
        until_a_call_fails(subscription(&store, address, 1, None, &outcomes).await).await;
    }
    assert_eq!(calls.lock().len(), 6);
    let counts = store.counts("t").await.unwrap();
    assert_eq!(
        (
            counts.requeued,
            counts.failed,
            counts.undeliverable,
            counts.ready
        ),
        (6, 0, 0, 1)
    );
    let again = store.take("t").await.unwrap();
    assert_eq!((again.id, again.attempt), (ids[0], 7));
}

#[tokio::test]
async fn a_job_delivered_before_goes_alone_so_the_jobs_beside_it_are_not_dead_lettered() {
    let jobs = [
        Pair { x: 1, y: 1 },
        Pair { x: 5, y: 0 },
        Pair { x: 2, y: 1 },
        Pair { x: 3, y: 1 },
    ];
    let (store, ids) = store_with(&jobs).await;
    let (address, calls) = fragile_factory().await;
    let outcomes = Outcomes::default();
    let limit = NonZeroU32::new(2);

    // All four in one call, which the zero divisor brings down: all four go back.
    until_a_call_fails(subscription(&store, address, 4, limit, &outcomes).await).await;
    // Delivered before, each goes alone: the zero divisor is given up on by itself.
    until_a_call_fails(subscription(&store, address, 4, limit, &outcomes).await).await;
    until_completed(subscription(&store, address, 4, limit, &outcomes).await, 3).await;

    let alone = |pair: Pair| vec![Job::from(pair)];
    assert_eq!(
        *calls.lock(),
        vec![
            jobs.map(Job::from).to_vec(),
            alone(jobs[0]),
            alone(jobs[1]),
            alone(jobs[2]),
            alone(jobs[3]),
        ]
    );
    let counts = store.counts("t").await.unwrap();
    assert_eq!(
        (counts.completed, counts.undeliverable, counts.requeued),
        (3, 1, 4)
    );
    let dead = store.dead_letters("t").await.unwrap();
    let dead: Vec<u64> = dead.letters.iter().map(|letter| letter.job_id).collect();
    assert_eq!(dead, [ids[1]]);
}

#[tokio::test]
async fn a_subscription_with_nothing_in_flight_ends_when_its_factory_closes_the_connection() {
    let (store, _) = store_with(&[Pair { x: 8, y: 2 }]).await;
    let closes = CancellationToken::new();
    let (address, calls) = fragile_factory_closed_by(closes.clone()).await;
    let outcomes = Outcomes::default();
    let running = tokio::spawn(
        subscription(&store, address, 4, None, &outcomes)
            .await
            .run(),
    );
    wait_until_completed(&store, 1).await;

    // The factory's process dies while its subscription waits for a job.
    closes.cancel();
    let end = tokio::time::timeout(WAIT, running)
        .await
        .expect("the subscription ends without a call to find out")
        .unwrap();
    assert_eq!(
        end,
        DispatcherEnd::FactoryFailed(CONNECTION_CLOSED.to_owned())
    );

    // It took nothing in ending: the next job waits for its first delivery.
    let room_by = tokio::time::Instant::now() + WAIT;
    let id = store
        .publish("t", Pair { x: 9, y: 3 }.into(), room_by)
        .await
        .unwrap();
    let counts = store.counts("t").await.unwrap();
    assert_eq!((counts.ready, counts.in_flight, counts.requeued), (1, 0, 0));
    let next = store.take("t").await.unwrap();
    assert_eq!((next.id, next.attempt), (id, 1));
    assert_eq!(calls.lock().len(), 1);
}

#[tokio::test]
async fn a_live_factory_with_nothing_to_do_keeps_its_subscription_and_gets_the_next_job() {
    /// Far longer than any timer of the broker's; the clock is paused while it passes.
    const IDLE: Duration = Duration::from_secs(24 * 3600);
    let (store, _) = store_with(&[]).await;
    let (address, calls) = fragile_factory().await;
    let outcomes = Outcomes::default();
    let dispatcher = subscription(&store, address, 4, None, &outcomes).await;
    let stop = dispatcher.stop.clone();
    let running = tokio::spawn(dispatcher.run());

    tokio::time::pause();
    tokio::time::sleep(IDLE).await;
    assert!(!running.is_finished(), "an idle subscription ended");
    tokio::time::resume();

    let room_by = tokio::time::Instant::now() + WAIT;
    store
        .publish("t", Pair { x: 9, y: 3 }.into(), room_by)
        .await
        .unwrap();
    wait_until_completed(&store, 1).await;
    stop.cancel();
    assert_eq!(running.await.unwrap(), DispatcherEnd::Stopped);
    assert_eq!(calls.lock().len(), 1);
}
