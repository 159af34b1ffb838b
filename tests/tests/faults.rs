//! Faults of real processes: a factory killed with SIGKILL while its calls are in flight.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use broker::{Outcome, Settings};
use factory::cli::LabTopic::Multiply;
use stubs::Pair;
use system_tests::*;

/// The address of the one multiply subscriber that is not `known`.
fn other_subscriber(broker: &lab::RunningBroker, known: SocketAddr) -> Option<SocketAddr> {
    broker
        .broker
        .subscriptions()
        .into_iter()
        .map(|key| key.factory)
        .find(|factory| *factory != known)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factory_killed_with_calls_in_flight_loses_no_job() {
    let settings = Settings {
        call_timeout: Duration::from_secs(2),
        ..Settings::default()
    };
    let (broker, recorder) = start_broker(settings).await;
    let survivor = start_factory(&broker, 0, {
        let mut config = factory_config(broker.address, &[Multiply], false);
        config.prefetch = 4;
        config
    })
    .await;
    let victim = FactoryProcess::start(
        broker.address,
        &[
            "--port",
            "0",
            "--topics",
            "multiply",
            "--no-pipeline",
            "--prefetch",
            "4",
        ],
    );
    eventually("the factory process subscribes", || {
        other_subscriber(&broker, survivor.address).is_some()
    })
    .await;
    let victim_address = other_subscriber(&broker, survivor.address).unwrap();

    const JOBS: u64 = 2_000;
    let mut miner = lab::miner_config(broker.address, "multiply");
    miner.interval = Duration::ZERO;
    miner.count = Some(JOBS);
    miner.concurrency = 4;
    let miner = tokio::spawn(miner::run(
        miner,
        lab_console::Console::quiet(),
        Default::default(),
    ));

    let victim_name = victim_address.to_string();
    eventually("the factory process has completed 100 jobs", || {
        recorder
            .completed("multiply")
            .iter()
            .filter(|c| c.factory == victim_name)
            .count()
            >= 100
    })
    .await;
    victim.kill();
    eventually("the broker drops the killed factory's subscription", || {
        subscriptions_of(&broker, victim_address) == 0
    })
    .await;

    let report = miner.await.unwrap().expect("the miner publishes every job");
    assert_eq!(report.published, JOBS);
    eventually("every published job is completed", || {
        recorder.completed_ids("multiply").len() as u64 == JOBS
    })
    .await;
    let stats = broker.topic_stats("multiply").await.unwrap();
    assert_eq!(
        (stats.published, stats.ready, stats.in_flight),
        (JOBS, 0, 0)
    );
    let expected: HashSet<u64> = recorder.completed_ids("multiply");
    assert_eq!(expected.len() as u64, JOBS);
    let requeued = recorder
        .outcomes()
        .iter()
        .filter(|o| matches!(o, Outcome::Requeued { .. }))
        .count();
    let completions = recorder.completed("multiply").len();
    eprintln!(
        "{JOBS} jobs, {completions} completions ({} duplicates), {requeued} requeued after the kill",
        completions as u64 - JOBS
    );
    assert_eq!(stats.requeued as usize, requeued);
    assert!(
        requeued > 0,
        "the kill hit calls in flight, and their jobs were put back"
    );

    // The killed factory, started again on its port, subscribes and gets work again.
    let restarted = FactoryProcess::start(
        broker.address,
        &[
            "--port",
            &victim_address.port().to_string(),
            "--topics",
            "multiply",
            "--no-pipeline",
        ],
    );
    eventually("the restarted factory subscribes", || {
        subscriptions_of(&broker, victim_address) == 1
    })
    .await;
    let client = client(broker.address).await;
    for i in 0..100 {
        publish(&client, "multiply", Pair { x: i, y: 2 }).await;
    }
    eventually("the restarted factory completes jobs", || {
        recorder
            .completed("multiply")
            .iter()
            .filter(|c| c.factory == victim_name && c.job_id >= JOBS)
            .count()
            > 0
    })
    .await;
    restarted.kill();
}
