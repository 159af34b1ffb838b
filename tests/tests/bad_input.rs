//! Bad input: each request gets the stated typed error, and broker and factory keep serving.

use std::time::{Duration, Instant};

use broker::Settings;
use factory::cli::LabTopic::{Divide, Multiply};
use stubs::{BrokerClient, BrokerError, JobError, Pair, PublishRequest, Subscription};
use system_tests::*;

async fn subscribe(
    client: &BrokerClient,
    topic: &str,
    address: &str,
    callback: &str,
    prefetch: u32,
) -> Result<String, BrokerError> {
    let subscription = Subscription {
        topic: topic.to_owned(),
        factory_address: address.to_owned(),
        callback: callback.to_owned(),
        prefetch,
    };
    client
        .subscribe(tarpc::context::current(), subscription)
        .await
        .expect("the broker answers")
        .map(|report| report.message)
}

#[tokio::test]
async fn publishing_to_a_missing_topic_is_no_such_topic() {
    let (broker, _) = start_broker(Settings::default()).await;
    let client = client(broker.address).await;
    assert_eq!(
        try_publish(&client, "nowhere", Pair { x: 1, y: 2 }).await,
        Err(BrokerError::NoSuchTopic {
            topic: "nowhere".into()
        })
    );
    // The broker still serves.
    try_create_topic(&client, "nowhere", 1).await.unwrap();
    assert!(try_publish(&client, "nowhere", Pair { x: 1, y: 2 })
        .await
        .is_ok());
}

#[tokio::test]
async fn invalid_topic_names_are_refused() {
    let (broker, _) = start_broker(Settings::default()).await;
    let client = client(broker.address).await;
    let too_long = "x".repeat(256);
    for name in ["", "has space", "slash/es", "ünicode", too_long.as_str()] {
        let created = try_create_topic(&client, name, 10).await;
        assert!(
            matches!(created, Err(BrokerError::InvalidTopic { .. })),
            "{name:?}: {created:?}"
        );
        let published = try_publish(&client, name, Pair { x: 1, y: 1 }).await;
        assert!(
            matches!(published, Err(BrokerError::InvalidTopic { .. })),
            "{name:?}: {published:?}"
        );
    }
    assert!(try_create_topic(&client, &"x".repeat(255), 10)
        .await
        .is_ok());
}

#[tokio::test]
async fn buffers_outside_1_to_1_000_000_are_refused() {
    let (broker, _) = start_broker(Settings::default()).await;
    let client = client(broker.address).await;
    for buffer in [0, 1_000_001] {
        assert_eq!(
            try_create_topic(&client, "jobs", buffer).await,
            Err(BrokerError::InvalidBuffer {
                buffer,
                min: 1,
                max: 1_000_000
            })
        );
    }
    assert!(
        broker.topic_counts("jobs").await.is_none(),
        "no topic was created"
    );
}

#[tokio::test]
async fn create_channel_is_idempotent_and_keeps_the_first_capacity() {
    let (broker, _) = start_broker(Settings::default()).await;
    let client = client(broker.address).await;
    let first = try_create_topic(&client, "jobs", 5).await.unwrap();
    assert!(first.contains("created"), "{first}");
    let second = try_create_topic(&client, "jobs", 50).await.unwrap();
    assert!(second.contains("keeps that buffer"), "{second}");
    assert_eq!(broker.topic_counts("jobs").await.unwrap().capacity, 5);
}

#[tokio::test]
async fn subscription_errors_are_typed() {
    let (broker, _) = start_broker(Settings::default()).await;
    let client = client(broker.address).await;
    try_create_topic(&client, "multiply", 10).await.unwrap();
    // A port that nobody listens on: bound, then released.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let closed = closed_port.to_string();

    assert_eq!(
        subscribe(&client, "absent", &closed, stubs::MULTIPLY, 1).await,
        Err(BrokerError::NoSuchTopic {
            topic: "absent".into()
        })
    );
    assert_eq!(
        subscribe(&client, "multiply", &closed, "Factory.Add", 1).await,
        Err(BrokerError::UnknownCallback {
            callback: "Factory.Add".into()
        })
    );
    assert_eq!(
        subscribe(&client, "multiply", &closed, stubs::MULTIPLY, 0).await,
        Err(BrokerError::InvalidPrefetch {
            prefetch: 0,
            min: 1,
            max: 1_024
        })
    );
    assert_eq!(
        subscribe(&client, "multiply", &closed, stubs::MULTIPLY, 1_025).await,
        Err(BrokerError::InvalidPrefetch {
            prefetch: 1_025,
            min: 1,
            max: 1_024
        })
    );
    // Neither needs a name lookup: no query leaves this machine.
    for address in ["not an address", "127.0.0.1:99999"] {
        let refused = subscribe(&client, "multiply", address, stubs::MULTIPLY, 1).await;
        assert!(
            matches!(&refused, Err(BrokerError::InvalidAddress { address: a, .. }) if a == address),
            "{address}: {refused:?}"
        );
    }
    let unreachable = subscribe(&client, "multiply", &closed, stubs::MULTIPLY, 1).await;
    assert!(
        matches!(&unreachable, Err(BrokerError::Unreachable { address, .. }) if *address == closed),
        "{unreachable:?}"
    );
    assert!(broker.broker.subscriptions().is_empty());
}

#[tokio::test]
async fn division_by_zero_and_overflow_fail_once_and_the_factory_keeps_serving() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let factory = lab_factory(&broker, &[Multiply, Divide], false).await;
    let client = client(broker.address).await;

    publish(&client, "divide", Pair { x: 5, y: 0 }).await;
    publish(&client, "multiply", Pair { x: i64::MAX, y: 2 }).await;
    publish(&client, "divide", Pair { x: 9, y: 3 }).await;
    publish(&client, "multiply", Pair { x: 6, y: 7 }).await;
    eventually("the good jobs are completed after the bad ones", || {
        recorder.completed("divide").len() == 1 && recorder.completed("multiply").len() == 1
    })
    .await;

    let failures: Vec<String> = recorder
        .outcomes()
        .iter()
        .filter(|o| matches!(o, broker::Outcome::Failed { .. }))
        .map(|o| o.to_string())
        .collect();
    assert_eq!(
        failures.len(),
        2,
        "each bad job fails exactly once: {failures:?}"
    );
    assert!(failures.contains(&"Factory.Divide of 5 and 0 failed: division by zero".to_string()));
    assert!(failures.contains(&format!(
        "Factory.Multiply of {} and 2 failed: integer overflow",
        i64::MAX
    )));
    assert!(recorder.outcomes().iter().any(|o| matches!(
        o,
        broker::Outcome::Failed {
            error: JobError::Overflow,
            ..
        }
    )));
    assert_eq!(recorder.completed("divide")[0].result, 3);
    assert_eq!(recorder.completed("multiply")[0].result, 42);
    for topic in ["divide", "multiply"] {
        let stats = broker.topic_counts(topic).await.unwrap();
        assert_eq!(
            (stats.failed, stats.completed, stats.requeued),
            (1, 1, 0),
            "{topic}"
        );
    }
    let dead = client
        .dead_letters(tarpc::context::current(), "divide".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((dead.total, dead.dropped, dead.letters.len()), (1, 0, 1));
    let letter = &dead.letters[0];
    assert_eq!(letter.job, Pair { x: 5, y: 0 }.into());
    assert_eq!(letter.error, JobError::DivideByZero);
    assert_eq!(letter.factory, factory.address.to_string());
    assert_eq!(
        client
            .dead_letters(tarpc::context::current(), "nowhere".into())
            .await
            .unwrap(),
        Err(BrokerError::NoSuchTopic {
            topic: "nowhere".into()
        })
    );
}

#[tokio::test]
async fn a_publish_to_a_full_topic_waits_and_past_its_deadline_leaves_no_job() {
    let (broker, _) = start_broker(Settings::default()).await;
    let client = client(broker.address).await;
    try_create_topic(&client, "small", 2).await.unwrap();
    for x in 0..2 {
        try_publish(&client, "small", Pair { x, y: 1 })
            .await
            .unwrap();
    }
    let mut context = tarpc::context::current();
    context.deadline = Instant::now() + Duration::from_millis(500);
    let request = PublishRequest {
        topic: "small".into(),
        job: Pair { x: 99, y: 1 }.into(),
    };
    let started = Instant::now();
    let refused = client
        .publish(context, request)
        .await
        .expect("the broker answers before the deadline");
    assert_eq!(
        refused,
        Err(BrokerError::TopicFull {
            topic: "small".into(),
            capacity: 2
        })
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it waited for room first"
    );
    let stats = broker.topic_counts("small").await.unwrap();
    assert_eq!((stats.ready, stats.published), (2, 2), "no phantom job");
}

#[tokio::test]
async fn a_waiting_publish_goes_through_once_room_is_made() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let client = client(broker.address).await;
    try_create_topic(&client, "multiply", 1).await.unwrap();
    publish(&client, "multiply", Pair { x: 1, y: 1 }).await;
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { publish(&client, "multiply", Pair { x: 2, y: 2 }).await })
    };
    eventually("the second publish is waiting", || !waiting.is_finished()).await;
    let _factory = lab_factory(&broker, &[Multiply], false).await;
    waiting.await.unwrap();
    eventually("both jobs are completed", || {
        recorder.completed("multiply").len() == 2
    })
    .await;
}

#[tokio::test]
async fn unsubscribe_stops_dispatching_and_resubscribing_replaces_the_old_subscription() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let factory = lab_factory(&broker, &[Multiply], false).await;
    let address = factory.address.to_string();
    let client = client(broker.address).await;

    // Subscribing again from the same address replaces the subscription: never two.
    subscribe(&client, "multiply", &address, stubs::MULTIPLY, 1)
        .await
        .unwrap();
    assert_eq!(subscriptions_of(&broker, factory.address), 1);

    let unsubscription = Subscription {
        topic: "multiply".into(),
        factory_address: address.clone(),
        callback: stubs::MULTIPLY.into(),
        prefetch: 1,
    };
    client
        .unsubscribe(tarpc::context::current(), unsubscription.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(subscriptions_of(&broker, factory.address), 0);
    publish(&client, "multiply", Pair { x: 3, y: 3 }).await;
    let stats = broker.topic_counts("multiply").await.unwrap();
    assert_eq!(
        (stats.ready, stats.in_flight),
        (1, 0),
        "no new dispatch after unsubscribe"
    );
    assert!(recorder.completed("multiply").is_empty());

    let again = client
        .unsubscribe(tarpc::context::current(), unsubscription)
        .await
        .unwrap();
    assert!(
        matches!(again, Err(BrokerError::NoSuchSubscription { .. })),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_miner_whose_broker_goes_away_for_good_gives_up_with_a_clear_error() {
    let (broker, _) = start_broker(Settings::default()).await;
    let mut config = lab::miner_config(broker.address, "multiply");
    config.interval = Duration::ZERO;
    config.concurrency = 32;
    // No factory: the topic fills, and the batcher's four calls all wait for room.
    config.buffer = 10;
    config.link.give_up_after = Duration::from_secs(1);
    let miner = lab::start_miner(config, lab_console::Console::quiet(), Default::default());
    eventually_async("the topic is full", async || {
        broker
            .topic_counts("multiply")
            .await
            .is_some_and(|stats| stats.ready == 10)
    })
    .await;
    broker.stop().await;
    let stopped = Instant::now();
    let error = miner
        .await
        .unwrap()
        .expect_err("the broker does not come back");
    let waited = stopped.elapsed();
    assert!(
        matches!(error, miner::MinerError::BrokerLost { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("is it still running"), "{error}");
    // About one --give-up-after (1 s) of redialling.
    assert!(waited < Duration::from_millis(2_500), "{waited:?}");
}

#[tokio::test]
async fn a_miner_and_a_factory_without_a_broker_fail_with_a_clear_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let miner = miner::run(
        lab::miner_config(closed, "multiply"),
        lab_console::Console::quiet(),
        Default::default(),
    )
    .await;
    let error = miner.expect_err("no broker listens there");
    assert!(
        matches!(error, miner::MinerError::BrokerUnreachable(_)),
        "{error:?}"
    );
    assert!(error.to_string().contains("cargo run -p broker"), "{error}");

    let factory = lab::RunningFactory::start(
        0,
        lab::factory_config(closed, true),
        lab_console::Console::quiet(),
    )
    .await
    .unwrap();
    let error = factory.stop().await.expect_err("no broker listens there");
    assert!(
        matches!(error, factory::FactoryError::BrokerUnreachable(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_number_of_topics_is_capped() {
    let settings = Settings {
        max_topics: 2,
        ..Settings::default()
    };
    let (broker, _) = start_broker(settings).await;
    let client = client(broker.address).await;
    try_create_topic(&client, "one", 1).await.unwrap();
    try_create_topic(&client, "two", 1).await.unwrap();
    assert_eq!(
        try_create_topic(&client, "three", 1).await,
        Err(BrokerError::TooManyTopics { limit: 2 })
    );
    assert!(
        try_create_topic(&client, "one", 1).await.is_ok(),
        "an existing topic is still fine"
    );
}
