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

/// Starts a `factory` process on a free port (multiply only, no pipeline, then `extra`) and
/// waits until the broker lists it beside the factory at `known`; returns it with its address.
async fn start_factory_process(
    broker: &lab::RunningBroker,
    known: SocketAddr,
    extra: &[&str],
) -> (Process, SocketAddr) {
    let broker_address = broker.address.to_string();
    let mut args = vec![
        "--broker",
        &broker_address,
        "--port",
        "0",
        "--topics",
        "multiply",
        "--no-pipeline",
    ];
    args.extend_from_slice(extra);
    let process = Process::start("factory", &args);
    eventually("the factory process subscribes", || {
        other_subscriber(broker, known).is_some()
    })
    .await;
    let address = other_subscriber(broker, known).expect("listed just now");
    (process, address)
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
    let broker_address = broker.address.to_string();
    let (victim, victim_address) =
        start_factory_process(&broker, survivor.address, &["--prefetch", "4"]).await;

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
    // Stopped, the factory holds the calls it is sent, so the kill below surely meets calls in
    // flight; jobs published here make sure there are some, however far the miner has got.
    victim.signal("STOP");
    let client = client(broker.address).await;
    let mut extra = 0;
    eventually_async("the stopped factory holds calls in flight", async || {
        let holding = broker
            .broker
            .stats()
            .await
            .subscribers
            .iter()
            .any(|subscriber| subscriber.address == victim_name && subscriber.in_flight > 0);
        if !holding {
            publish(&client, "multiply", Pair { x: extra, y: 3 }).await;
            extra += 1;
        }
        holding
    })
    .await;
    victim.kill();
    let total = JOBS + extra as u64;
    eventually("the broker drops the killed factory's subscription", || {
        subscriptions_of(&broker, victim_address) == 0
    })
    .await;

    let report = miner.await.unwrap().expect("the miner publishes every job");
    assert_eq!(report.published, JOBS);
    eventually("every published job is completed", || {
        recorder.completed_ids("multiply").len() as u64 == total
    })
    .await;
    let stats = broker.topic_stats("multiply").await.unwrap();
    assert_eq!(
        (stats.published, stats.ready, stats.in_flight),
        (total, 0, 0)
    );
    let expected: HashSet<u64> = recorder.completed_ids("multiply");
    assert_eq!(expected.len() as u64, total);
    let requeued = recorder
        .outcomes()
        .iter()
        .filter(|o| matches!(o, Outcome::Requeued { .. }))
        .count();
    let completions = recorder.completed("multiply").len();
    eprintln!(
        "{total} jobs, {completions} completions ({} duplicates), {requeued} requeued after the kill",
        completions as u64 - total
    );
    assert_eq!(stats.requeued as usize, requeued);
    assert!(
        requeued > 0,
        "the kill hit calls in flight, and their jobs were put back"
    );

    // The killed factory, started again on its port, subscribes and gets work again.
    let restarted = Process::start(
        "factory",
        &[
            "--broker",
            &broker_address,
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
    for i in 0..100 {
        publish(&client, "multiply", Pair { x: i, y: 2 }).await;
    }
    eventually("the restarted factory completes jobs", || {
        recorder
            .completed("multiply")
            .iter()
            .filter(|c| c.factory == victim_name && c.job_id >= total)
            .count()
            > 0
    })
    .await;
    restarted.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_factory_is_dropped_on_the_deadline_and_resubscribes_by_itself_when_it_wakes() {
    let settings = Settings {
        call_timeout: Duration::from_secs(1),
        ..Settings::default()
    };
    let (broker, recorder) = start_broker(settings).await;
    let survivor = start_factory(
        &broker,
        0,
        factory_config(broker.address, &[Multiply], false),
    )
    .await;
    let (sleeper, sleeper_address) = start_factory_process(&broker, survivor.address, &[]).await;
    let sleeper_name = sleeper_address.to_string();
    let done_by_sleeper = || {
        recorder
            .completed("multiply")
            .iter()
            .filter(|c| c.factory == sleeper_name)
            .count()
    };

    const JOBS: u64 = 3_000;
    let mut miner = lab::miner_config(broker.address, "multiply");
    miner.interval = Duration::from_millis(1);
    miner.count = Some(JOBS);
    let miner = tokio::spawn(miner::run(
        miner,
        lab_console::Console::quiet(),
        Default::default(),
    ));

    eventually("the factory process completes jobs", || {
        done_by_sleeper() >= 20
    })
    .await;
    sleeper.signal("STOP");
    eventually(
        "the broker drops the hung factory on the call deadline",
        || subscriptions_of(&broker, sleeper_address) == 0,
    )
    .await;
    let done_before_waking = done_by_sleeper();
    let survivor_name = survivor.address.to_string();
    let done_by_survivor = recorder
        .completed("multiply")
        .iter()
        .filter(|c| c.factory == survivor_name)
        .count();
    eventually("the other factory goes on working meanwhile", || {
        recorder
            .completed("multiply")
            .iter()
            .filter(|c| c.factory == survivor_name)
            .count()
            > done_by_survivor + 20
    })
    .await;

    sleeper.signal("CONT");
    eventually("the woken factory subscribes again by itself", || {
        subscriptions_of(&broker, sleeper_address) == 1
    })
    .await;
    eventually("the woken factory gets work again", || {
        done_by_sleeper() > done_before_waking
    })
    .await;

    assert_eq!(miner.await.unwrap().unwrap().published, JOBS);
    eventually("every published job is completed", || {
        recorder.completed_ids("multiply").len() as u64 == JOBS
    })
    .await;
    let completions = recorder.completed("multiply").len() as u64;
    eprintln!(
        "{JOBS} jobs, {completions} completions ({} duplicates)",
        completions - JOBS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_and_factories_carry_on_through_a_broker_restart() {
    let port = free_port();
    let port_arg = port.to_string();
    let broker_address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let first = Process::start("broker", &["--port", &port_arg, "--http", "off"]);
    let completions = "Factory.Multiply of ";
    // The factory cannot start before the broker listens; retry its start until then.
    let factory = loop {
        let factory = lab::RunningFactory::start(
            0,
            factory_config(broker_address, &[Multiply], false),
            lab_console::Console::quiet(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !factory.is_finished() {
            break factory;
        }
    };
    const JOBS: u64 = 400;
    let mut miner = lab::miner_config(broker_address, "multiply");
    miner.interval = Duration::from_millis(5);
    miner.count = Some(JOBS);
    let miner = tokio::spawn(miner::run(
        miner,
        lab_console::Console::quiet(),
        Default::default(),
    ));

    eventually("the first broker completes jobs", || {
        first.count_lines(completions) >= 20
    })
    .await;
    first.kill();
    // The second broker runs on two threads (--threads): the same jobs, another runtime.
    let second = Process::start(
        "broker",
        &["--port", &port_arg, "--http", "off", "--threads", "2"],
    );
    eventually(
        "the restarted broker completes jobs: the factory and the miner are back",
        || second.count_lines(completions) >= 20,
    )
    .await;
    let report = miner
        .await
        .unwrap()
        .expect("the miner carries on through the restart");
    assert_eq!(report.published, JOBS);
    assert!(
        !factory.is_finished(),
        "the factory carries on through the restart"
    );
    factory
        .stop()
        .await
        .expect("a graceful stop after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_a_factory_killed_every_second_and_another_hung_lose_no_job() {
    let settings = Settings {
        call_timeout: Duration::from_secs(1),
        ..Settings::default()
    };
    let (broker, recorder) = start_broker(settings).await;
    let broker_address = broker.address.to_string();
    let steady = start_factory(&broker, 0, {
        let mut config = factory_config(broker.address, &[Multiply], false);
        config.prefetch = 4;
        config
    })
    .await;
    let factory_args = |port: &str| -> Vec<String> {
        [
            "--broker",
            &broker_address,
            "--port",
            port,
            "--topics",
            "multiply",
            "--no-pipeline",
            "--prefetch",
            "4",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect()
    };
    let start = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Process::start("factory", &args)
    };
    let (sleeper, sleeper_address) =
        start_factory_process(&broker, steady.address, &["--prefetch", "4"]).await;
    let victim_port = free_port().to_string();
    let mut victim = start(&factory_args(&victim_port));

    const JOBS: u64 = 10_000;
    let mut miner = lab::miner_config(broker.address, "multiply");
    miner.interval = Duration::from_millis(1);
    miner.concurrency = 2;
    miner.count = Some(JOBS);
    let miner = tokio::spawn(miner::run(
        miner,
        lab_console::Console::quiet(),
        Default::default(),
    ));

    // Fault injection paced by the clock: a kill and a restart every second, and the sleeper
    // stopped for twice the call timeout early on.
    let mut second = 0;
    while !miner.is_finished() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        second += 1;
        victim.kill();
        victim = start(&factory_args(&victim_port));
        match second {
            1 => sleeper.signal("STOP"),
            3 => {
                eventually(
                    "the broker drops the hung factory on the call deadline",
                    || subscriptions_of(&broker, sleeper_address) == 0,
                )
                .await;
                sleeper.signal("CONT");
            }
            _ => {}
        }
    }
    if second < 3 {
        sleeper.signal("CONT");
    }
    let report = miner.await.unwrap().expect("the miner publishes every job");
    assert_eq!(report.published, JOBS);
    eventually("every published job is completed at least once", || {
        recorder.completed_ids("multiply").len() as u64 == JOBS
    })
    .await;
    let completions = recorder.completed("multiply").len() as u64;
    let stats = broker.topic_stats("multiply").await.unwrap();
    eprintln!(
        "{JOBS} jobs in {second} s with {second} kills: {completions} completions ({} duplicates), {} requeued",
        completions - JOBS,
        stats.requeued
    );
    assert_eq!((stats.ready, stats.in_flight), (0, 0));

    // Everything still serves: the woken sleeper is subscribed again, and new jobs complete.
    eventually("the woken factory subscribes again", || {
        subscriptions_of(&broker, sleeper_address) == 1
    })
    .await;
    let client = client(broker.address).await;
    for x in 0..30 {
        publish(&client, "multiply", Pair { x, y: 3 }).await;
    }
    eventually("new jobs are completed", || {
        recorder.completed_ids("multiply").len() as u64 == JOBS + 30
    })
    .await;
    drop(victim);
    drop(sleeper);
}
