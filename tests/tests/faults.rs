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
    let mut args = vec!["--no-pipeline"];
    args.extend_from_slice(extra);
    let process = factory_process(&broker_address, 0, "multiply", &args);
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
    let miner = spawn_miner(miner, Default::default());

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
    let stats = broker.topic_counts("multiply").await.unwrap();
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
    let port = victim_address.port();
    let restarted = factory_process(&broker_address, port, "multiply", &["--no-pipeline"]);
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
    let survivor = lab_factory(&broker, &[Multiply], false).await;
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
    let miner = spawn_miner(miner, Default::default());

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
    let miner = spawn_miner(miner, Default::default());

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

/// SIGKILLs of real factory processes in the test below: enough that a fault that happens one
/// time in ten still shows.
const KILLS: usize = 20;

/// The figures the broker keeps for the subscription of the factory at `address`, if listed.
async fn subscriber(
    broker: &lab::RunningBroker,
    address: SocketAddr,
) -> Option<stubs::SubscriberReport> {
    let address = address.to_string();
    broker
        .broker
        .stats()
        .await
        .subscribers
        .into_iter()
        .find(|subscriber| subscriber.address == address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_full_speed_twenty_factory_kills_and_a_hang_past_the_call_timeout_lose_no_job() {
    let call_timeout = Duration::from_secs(1);
    let settings = Settings {
        call_timeout,
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
    let (sleeper, sleeper_address) =
        start_factory_process(&broker, steady.address, &["--prefetch", "4"]).await;
    // Two victims, killed in turn, each restarted on its own port: while one starts again the
    // other is at work, so every kill meets a factory with calls in flight.
    let start_victim = |port: u16| {
        let extra = ["--no-pipeline", "--prefetch", "4"];
        factory_process(&broker_address, port, "multiply", &extra)
    };
    let victim_addresses: [SocketAddr; 2] = [
        ([127, 0, 0, 1], free_port()).into(),
        ([127, 0, 0, 1], free_port()).into(),
    ];
    let mut victims = victim_addresses.map(|address| Some(start_victim(address.port())));
    for address in victim_addresses {
        eventually("the victim subscribes", || {
            subscriptions_of(&broker, address) == 1
        })
        .await;
    }

    let mut miner = lab::miner_config(broker.address, "multiply");
    miner.interval = Duration::ZERO;
    miner.concurrency = 4;
    let stop_miner = tokio_util::sync::CancellationToken::new();
    let miner = spawn_miner(miner, stop_miner.clone());

    // Each kill waits until the victim's new subscription has completed a job, so that it
    // meets a working factory, and until the broker has dropped the old one, so that the next
    // kill is not aimed at a subscription already gone.
    let started = std::time::Instant::now();
    let mut stopped_at = None;
    let mut woken = false;
    for kill in 0..KILLS {
        let which = kill % 2;
        let address = victim_addresses[which];
        eventually_async("the victim completes jobs", async || {
            subscriber(&broker, address)
                .await
                .is_some_and(|subscriber| subscriber.completed > 0)
        })
        .await;
        victims[which].take().expect("running").kill();
        eventually("the broker drops the killed factory", || {
            subscriptions_of(&broker, address) == 0
        })
        .await;
        victims[which] = Some(start_victim(address.port()));
        if kill == 1 {
            sleeper.signal("STOP");
            stopped_at = Some(std::time::Instant::now());
        }
        // Woken once the broker has given up on it and it has stayed stopped twice the call
        // timeout: its calls passed their deadline with the load still on.
        if let Some(at) = stopped_at {
            if !woken
                && at.elapsed() >= 2 * call_timeout
                && subscriptions_of(&broker, sleeper_address) == 0
            {
                sleeper.signal("CONT");
                woken = true;
            }
        }
    }
    if !woken {
        eventually(
            "the broker drops the hung factory on the call deadline",
            || subscriptions_of(&broker, sleeper_address) == 0,
        )
        .await;
        let stopped_for = stopped_at.expect("stopped at the second kill").elapsed();
        // The time itself is the point here: stopped past the call timeout, twice over.
        tokio::time::sleep((2 * call_timeout).saturating_sub(stopped_for)).await;
        sleeper.signal("CONT");
    }
    let faults_took = started.elapsed();
    stop_miner.cancel();
    let report = miner.await.unwrap().expect("the miner stops cleanly");

    eventually_async("every published job is settled", async || {
        let stats = broker.topic_counts("multiply").await.unwrap();
        (stats.ready, stats.in_flight) == (0, 0)
    })
    .await;
    let stats = broker.topic_counts("multiply").await.unwrap();
    let published = stats.published;
    assert_eq!(
        report.published, published,
        "the broker took exactly the jobs it acknowledged"
    );
    assert_eq!(stats.undeliverable, 0, "no job was given up on");
    let completed_ids = recorder.completed_ids("multiply");
    assert_eq!(
        completed_ids.len() as u64,
        published,
        "every published job is completed"
    );
    assert!(completed_ids.iter().all(|id| *id < published));
    let completions = recorder.completed("multiply").len() as u64;
    eprintln!(
        "{published} jobs at full speed in {faults_took:.1?} with {KILLS} kills and one hang: \
         {completions} completions ({} duplicates), {} requeued",
        completions - published,
        stats.requeued
    );
    assert!(stats.requeued > 0, "the kills met calls in flight");

    // Every factory serves again: the steady one, both restarted victims and the woken
    // sleeper each complete jobs published from now on.
    eventually("the woken factory subscribes again", || {
        subscriptions_of(&broker, sleeper_address) == 1
    })
    .await;
    let factories = [
        steady.address,
        sleeper_address,
        victim_addresses[0],
        victim_addresses[1],
    ];
    let client = client(broker.address).await;
    let mut x = 0;
    eventually_async("every factory completes new jobs", async || {
        for _ in 0..20 {
            publish(&client, "multiply", Pair { x, y: 3 }).await;
            x += 1;
        }
        let late = recorder.completed("multiply");
        factories.iter().all(|factory| {
            let name = factory.to_string();
            late.iter()
                .any(|c| c.factory == name && c.job_id >= published)
        })
    })
    .await;
    eventually_async("the new jobs are completed too", async || {
        let stats = broker.topic_counts("multiply").await.unwrap();
        (stats.ready, stats.in_flight) == (0, 0)
    })
    .await;
    assert_eq!(
        recorder.completed_ids("multiply").len() as u64,
        published + x as u64
    );
    drop(victims);
    drop(sleeper);
}
