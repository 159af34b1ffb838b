//! Graceful stops: SIGTERM on a factory, a broker and a miner, each a real process.

use std::time::Duration;

use broker::{Outcome, Settings};
use factory::cli::LabTopic::Multiply;
use system_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_factory_unsubscribes_finishes_its_calls_flushes_its_pipeline_and_exits_0() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let broker_address = broker.address.to_string();
    let mut factory = Process::start(
        "factory",
        &[
            "--broker",
            &broker_address,
            "--port",
            "0",
            "--topics",
            "multiply",
            "--prefetch",
            "4",
            "--buffer",
            "100000",
        ],
    );
    eventually("the factory subscribes", || {
        broker.broker.subscriptions().len() == 1
    })
    .await;
    let mut miner = lab::miner_config(broker.address, "multiply");
    miner.interval = Duration::ZERO;
    let stop_miner = tokio_util::sync::CancellationToken::new();
    let miner = tokio::spawn(miner::run(
        miner,
        lab_console::Console::quiet(),
        stop_miner.clone(),
    ));

    eventually("the factory completes jobs", || {
        recorder.completed("multiply").len() >= 101
    })
    .await;
    factory.signal("TERM");
    let status = factory.exit_status().await;
    assert!(status.success(), "the factory exits 0: {status:?}");
    assert!(broker.broker.subscriptions().is_empty(), "it unsubscribed");
    let failures: Vec<_> = recorder
        .outcomes()
        .into_iter()
        .filter(|o| matches!(o, Outcome::Requeued { .. }))
        .collect();
    assert!(
        failures.is_empty(),
        "the broker saw no failed call: {failures:?}"
    );
    let multiplied = recorder.completed("multiply").len() as u64;
    let divide = broker.topic_stats("divide").await.unwrap();
    assert_eq!(
        divide.published,
        multiplied / 2,
        "every whole pipeline group was published"
    );
    let multiply = broker.topic_stats("multiply").await.unwrap();
    assert_eq!(multiply.in_flight, 0);

    stop_miner.cancel();
    miner.await.unwrap().expect("the miner stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_broker_exits_0() {
    let port = free_port();
    let mut broker = Process::start("broker", &["--port", &port.to_string(), "--http", "off"]);
    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let held = lab::wait_until(WAIT, async || {
        transport::connect_broker(
            &address.to_string(),
            Duration::from_secs(1),
            &transport::AccessToken::none(),
        )
        .await
        .is_ok()
    })
    .await;
    assert!(held, "the broker listens");
    let factory = lab::RunningFactory::start(
        0,
        factory_config(address, &[Multiply], false),
        lab_console::Console::quiet(),
    )
    .await
    .unwrap();
    let client = client(address).await;
    let subscription = stubs::Subscription {
        topic: "multiply".into(),
        factory_address: factory.address.to_string(),
        callback: stubs::MULTIPLY.into(),
        prefetch: 1,
    };
    eventually_async("the factory subscribes", async || {
        let held = client
            .is_subscribed(tarpc::context::current(), subscription.clone())
            .await;
        matches!(held, Ok(Ok(true)))
    })
    .await;
    broker.signal("TERM");
    let status = broker.exit_status().await;
    assert!(status.success(), "the broker exits 0: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_miner_finishes_its_publishes_and_exits_0() {
    let (broker, _) = start_broker(Settings::default()).await;
    let broker_address = broker.address.to_string();
    let mut miner = Process::start(
        "miner",
        &[
            "--broker",
            &broker_address,
            "--interval",
            "5ms",
            "--concurrency",
            "4",
            "--buffer",
            "100000",
        ],
    );
    eventually("the miner publishes", || {
        miner.count_lines("published ") >= 50
    })
    .await;
    miner.signal("TERM");
    let status = miner.exit_status().await;
    assert!(status.success(), "the miner exits 0: {status:?}");
    // The process has exited, so every line is written; the reader thread may still be
    // reading the last ones.
    eventually_async(
        "every job the broker took was printed, and no other",
        async || {
            let published = broker.topic_stats("multiply").await.unwrap().published;
            miner.count_lines("published ") as u64 == published
        },
    )
    .await;
}
