//! Part 1: the Multiply factory.

use std::collections::HashSet;

use broker::Settings;
use factory::cli::LabTopic::Multiply;
use stubs::{Callback, Job, Pair};
use system_tests::*;

#[tokio::test]
async fn a_subscribed_factory_gets_jobs_and_the_broker_completes_them_with_products() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let _factory = lab_factory(&broker, &[Multiply], false).await;
    let client = client(broker.address).await;

    let mut published = HashSet::new();
    for i in 0..50_i64 {
        published.insert(publish(&client, "multiply", Pair { x: i, y: i + 1_000 }).await);
    }
    eventually("50 jobs are completed", || {
        recorder.completed("multiply").len() == 50
    })
    .await;

    let completed = recorder.completed("multiply");
    for completion in &completed {
        let Job::Pair(Pair { x, y }) = completion.job else {
            panic!("a pair was published")
        };
        assert_eq!(completion.callback, Callback::Multiply);
        assert_eq!(completion.result, x * y, "{completion:?}");
    }
    assert_eq!(recorder.completed_ids("multiply"), published);
    let stats = broker.topic_counts("multiply").await.unwrap();
    assert_eq!(
        (
            stats.published,
            stats.completed,
            stats.ready,
            stats.in_flight
        ),
        (50, 50, 0, 0)
    );
}

#[tokio::test]
async fn a_factory_stopped_and_restarted_on_its_port_gets_work_again() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let config = factory_config(broker.address, &[Multiply], false);
    let factory = start_factory(&broker, 0, config.clone()).await;
    let port = factory.address.port();
    let client = client(broker.address).await;

    for i in 0..5 {
        publish(&client, "multiply", Pair { x: i, y: 2 }).await;
    }
    eventually("the first 5 jobs are completed", || {
        recorder.completed("multiply").len() == 5
    })
    .await;

    factory.stop().await.expect("a graceful stop");
    assert_eq!(subscriptions_of(&broker, ([127, 0, 0, 1], port).into()), 0);
    // Buffer 10: the ten jobs wait in the topic while no factory is subscribed.
    for i in 0..10 {
        publish(&client, "multiply", Pair { x: i, y: 3 }).await;
    }
    let stats = broker.topic_counts("multiply").await.unwrap();
    assert_eq!((stats.ready, stats.completed), (10, 5));

    let _restarted = start_factory(&broker, port, config).await;
    eventually(
        "the waiting jobs are completed by the restarted factory",
        || recorder.completed("multiply").len() == 15,
    )
    .await;
    assert_eq!(recorder.completed_ids("multiply").len(), 15);
}

#[tokio::test]
async fn two_factories_both_get_work_and_no_job_is_completed_twice() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let first = lab_factory(&broker, &[Multiply], false).await;
    let second = lab_factory(&broker, &[Multiply], false).await;

    let mut miner = lab::miner_config(broker.address, "multiply");
    miner.interval = std::time::Duration::ZERO;
    miner.count = Some(300);
    miner.concurrency = 4;
    miner.seed = Some(1);
    let report = miner::run(miner, lab_console::Console::quiet(), Default::default())
        .await
        .expect("the miner publishes its jobs");
    assert_eq!(report.published, 300);
    eventually("300 jobs are completed", || {
        recorder.completed("multiply").len() >= 300
    })
    .await;

    let completed = recorder.completed("multiply");
    assert_eq!(completed.len(), 300, "no job is completed twice");
    assert_eq!(recorder.completed_ids("multiply").len(), 300);
    for factory in [first.address, second.address] {
        let share = completed
            .iter()
            .filter(|c| c.factory == factory.to_string())
            .count();
        assert!(share > 0, "factory {factory} got no work");
    }
}
