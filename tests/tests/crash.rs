//! A durable broker SIGKILLed again and again under load: miners publishing as fast as they
//! can and factories working, all real processes that reconnect by themselves. Every job a
//! miner got an acknowledgement for must be completed at least once; duplicates are counted.

use std::time::Duration;

use system_tests::*;

const CRASHES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_job_is_completed_through_twenty_broker_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let port = free_port();
    let port_arg = port.to_string();
    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let broker_address = address.to_string();
    let broker_args = [
        "--port",
        &port_arg,
        "--http",
        "off",
        "--quiet",
        "--data-dir",
        &data_dir,
    ];
    let mut broker = Process::start("broker", &broker_args);
    client_when_up(address).await;

    let miners: Vec<Process> = ["multiply", "divide"]
        .into_iter()
        .map(|topic| load_miner(&broker_address, topic))
        .collect();
    let factories: Vec<Process> = (0..2).map(|_| load_factory(&broker_address)).collect();
    let acknowledged_so_far = || -> usize {
        miners
            .iter()
            .map(|miner| miner.count_lines("published "))
            .sum()
    };

    let seed = clock_seed();
    println!("crash moments seeded with {seed}");
    let mut random = seed;
    for crash in 0..CRASHES {
        // Load first: the miners have (re)connected and publish again.
        let before = acknowledged_so_far();
        eventually(
            &format!("publishes are acknowledged before crash {crash}"),
            || acknowledged_so_far() > before,
        )
        .await;
        let moment = Duration::from_millis(50 + next_random(&mut random) % 400);
        tokio::time::sleep(moment).await;
        broker.kill();
        broker = Process::start("broker", &broker_args);
    }
    let client = client_when_up(address).await;
    let before = acknowledged_so_far();
    eventually("publishes are acknowledged after the last crash", || {
        acknowledged_so_far() > before
    })
    .await;

    // The miners stop gracefully: what they have in flight is answered and printed.
    let mut all_acknowledged = Vec::new();
    for mut miner in miners {
        miner.signal("TERM");
        assert!(miner.exit_status().await.success());
        let acknowledged = acknowledged(&miner.lines());
        assert!(!acknowledged.is_empty());
        all_acknowledged.extend(acknowledged);
    }
    let acknowledged = all_acknowledged;
    let reckoning = reckon_when_settled(&client, &acknowledged, &factories).await;
    println!(
        "{CRASHES} crashes: {} jobs acknowledged, {} missing, {} completed more than once",
        reckoning.acknowledged, reckoning.missing_count, reckoning.duplicates,
    );
    assert!(
        reckoning.missing.is_empty(),
        "{} acknowledged jobs were never completed, the first: {:?}",
        reckoning.missing_count,
        reckoning.missing
    );
    assert!(
        reckoning.acknowledged >= 1_000,
        "too little load to test anything: {} jobs",
        reckoning.acknowledged
    );
}
