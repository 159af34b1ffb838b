//! A factory that dies holding subscriptions with no call in flight (its `divide` while only
//! multiply jobs flow): the broker hears of the closed connection and drops them within
//! seconds, instead of listing them until a call to them fails; and a live factory with
//! nothing to do keeps its subscriptions. The factories that die are real processes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::queue::JobId;
use broker::{Outcome, Request, Settings};
use factory::cli::LabTopic::{Divide, Multiply};
use lab::RunningBroker;
use stubs::{BrokerClient, ChannelRequest, Pair};
use system_tests::go::start_go;
use system_tests::*;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How soon the broker must drop a dead factory's subscriptions. It hears of the closed
/// connections within milliseconds; the rest is room for a busy CI machine.
const DROPPED_WITHIN: Duration = Duration::from_secs(10);

/// The buffer of the test's topics: room for every job published while no factory serves them,
/// so that no publish waits.
const BUFFER: u32 = 10_000;

/// How often a multiply job is published while they flow.
const FLOW_INTERVAL: Duration = Duration::from_millis(5);

/// How many multiply jobs the doomed factory computes before it is killed: enough to show that
/// its multiply subscription is busy.
const COMPUTED_BEFORE_THE_KILL: usize = 20;

/// How long live factories are left with nothing to do while the test watches their
/// subscriptions: several times anything that runs on a timer beside them (a factory checks
/// its subscriptions every second).
const IDLE_WATCH: Duration = Duration::from_secs(5);

/// How often the subscriptions are looked at meanwhile.
const LOOK_INTERVAL: Duration = Duration::from_millis(50);

/// The topics of every subscription the broker lists for the factory at `address`.
async fn topics_of(broker: &RunningBroker, address: &str) -> Vec<String> {
    let mut topics: Vec<String> = broker
        .broker
        .stats()
        .await
        .subscribers
        .into_iter()
        .filter(|subscriber| subscriber.address == address)
        .map(|subscriber| subscriber.topic)
        .collect();
    topics.sort();
    topics
}

/// Creates `multiply` and `divide` with room for every job of a test; the factories that
/// create them later keep this buffer.
async fn create_topics(client: &BrokerClient) {
    for topic in ["multiply", "divide"] {
        let request = ChannelRequest {
            topic: topic.to_owned(),
            buffer: BUFFER,
        };
        client
            .create_channel(tarpc::context::current(), request)
            .await
            .expect("the broker answers")
            .expect("the broker creates the topic");
    }
}

/// Publishes a multiply job every [`FLOW_INTERVAL`] until `stop`; returns their ids.
fn flow_of_multiply_jobs(client: BrokerClient, stop: CancellationToken) -> JoinHandle<Vec<JobId>> {
    tokio::spawn(async move {
        let mut ids = Vec::new();
        for x in 0.. {
            if stop.is_cancelled() {
                break;
            }
            ids.push(publish(&client, "multiply", Pair { x, y: 2 }).await);
            tokio::time::sleep(FLOW_INTERVAL).await;
        }
        ids
    })
}

/// The one factory address the broker lists, once it lists subscriptions to both topics.
async fn subscribed_factory(broker: &RunningBroker) -> String {
    eventually_async(
        "the factory subscribes to multiply and divide",
        async || broker.broker.stats().await.subscribers.len() == 2,
    )
    .await;
    let subscribers = broker.broker.stats().await.subscribers;
    assert_eq!(
        subscribers[0].address, subscribers[1].address,
        "one factory"
    );
    subscribers[0].address.clone()
}

/// The factory process that `start` starts (given the broker's address) subscribes to
/// multiply and divide, computes multiply jobs and is killed with SIGKILL while its divide
/// subscription has nothing to do: both subscriptions must be gone within
/// [`DROPPED_WITHIN`], and every job, published before the kill or after, is completed once a
/// new factory subscribes.
async fn a_killed_factory_loses_both_subscriptions_within_seconds(
    start: impl FnOnce(&str) -> Process,
) {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let client = client(broker.address).await;
    create_topics(&client).await;
    let doomed = start(&broker.address.to_string());
    let address = subscribed_factory(&broker).await;

    let stop_flow = CancellationToken::new();
    let flow = flow_of_multiply_jobs(client.clone(), stop_flow.clone());
    eventually("the factory computes multiply jobs", || {
        recorder
            .completed("multiply")
            .iter()
            .filter(|completion| completion.factory == address)
            .count()
            >= COMPUTED_BEFORE_THE_KILL
    })
    .await;
    assert!(
        topics_of(&broker, &address)
            .await
            .contains(&"divide".to_owned()),
        "the divide subscription is listed while the factory lives"
    );

    doomed.kill();
    let killed = Instant::now();
    let dropped = lab::wait_until(DROPPED_WITHIN, async || {
        topics_of(&broker, &address).await.is_empty()
    })
    .await;
    assert!(
        dropped,
        "{DROPPED_WITHIN:?} after the kill the broker still lists {:?} for the dead factory",
        topics_of(&broker, &address).await
    );
    eprintln!(
        "both subscriptions dropped {:?} after the kill",
        killed.elapsed()
    );

    stop_flow.cancel();
    let mut multiply_jobs = flow.await.unwrap();
    let mut divide_jobs = Vec::new();
    for x in 1..=10 {
        multiply_jobs.push(publish(&client, "multiply", Pair { x, y: 3 }).await);
        divide_jobs.push(publish(&client, "divide", Pair { x: 10 * x, y: x }).await);
    }
    let _heir = lab_factory(&broker, &[Multiply, Divide], false).await;
    eventually("every job is completed", || {
        let multiplied = recorder.completed_ids("multiply");
        let divided = recorder.completed_ids("divide");
        multiply_jobs.iter().all(|id| multiplied.contains(id))
            && divide_jobs.iter().all(|id| divided.contains(id))
    })
    .await;
    let divide_requeued = recorder
        .outcomes()
        .iter()
        .filter(
            |outcome| matches!(outcome, Outcome::Requeued { topic, .. } if &**topic == "divide"),
        )
        .count();
    assert_eq!(
        divide_requeued, 0,
        "the divide subscription ended without taking a job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_factorys_idle_divide_subscription_is_dropped_within_seconds_and_no_job_is_lost() {
    a_killed_factory_loses_both_subscriptions_within_seconds(|broker| {
        factory_process(broker, 0, "multiply,divide", &["--no-pipeline"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_go_factorys_idle_divide_subscription_is_dropped_within_seconds_and_no_job_is_lost(
) {
    a_killed_factory_loses_both_subscriptions_within_seconds(|broker| {
        start_go(
            "factory",
            &["-ip", "127.0.0.1:0", "-broker", broker, "-no-pipeline"],
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_factories_with_nothing_to_do_keep_their_subscriptions_and_get_the_next_jobs() {
    let recorder = Recorder::default();
    let subscribes = Arc::new(AtomicUsize::new(0));
    let watcher: broker::Watcher = {
        let subscribes = subscribes.clone();
        Arc::new(move |request| {
            if let Request::Subscribe { .. } = request {
                subscribes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let broker =
        RunningBroker::start_watched(0, Settings::default(), recorder.observer(), Some(watcher))
            .await
            .expect("bind a loopback port");
    let broker_address = broker.address.to_string();
    let client = client(broker.address).await;
    create_topics(&client).await;
    let _rust = Process::start(
        "factory",
        &["--broker", &broker_address, "--port", "0", "--no-pipeline"],
    );
    let _go = start_go(
        "factory",
        &[
            "-ip",
            "127.0.0.1:0",
            "-broker",
            &broker_address,
            "-no-pipeline",
        ],
    );
    eventually_async("both factories subscribe to both topics", async || {
        broker.broker.stats().await.subscribers.len() == 4
    })
    .await;
    let subscribed = subscribes.load(Ordering::Relaxed);

    let watched = Instant::now();
    while watched.elapsed() < IDLE_WATCH {
        assert_eq!(
            broker.broker.stats().await.subscribers.len(),
            4,
            "a subscription was dropped {:?} into the idle time",
            watched.elapsed()
        );
        tokio::time::sleep(LOOK_INTERVAL).await;
    }
    assert_eq!(
        subscribes.load(Ordering::Relaxed),
        subscribed,
        "no factory had to subscribe again"
    );

    let multiply = publish(&client, "multiply", Pair { x: 6, y: 7 }).await;
    let divide = publish(&client, "divide", Pair { x: 42, y: 6 }).await;
    eventually("the next jobs are completed", || {
        recorder.completed_ids("multiply").contains(&multiply)
            && recorder.completed_ids("divide").contains(&divide)
    })
    .await;
}
