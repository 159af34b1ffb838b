//! A durable broker SIGKILLed again and again under load: miners publishing as fast as they
//! can and factories working, all real processes that reconnect by themselves. Every job a
//! miner got an acknowledgement for must be completed at least once; duplicates are counted.

use std::collections::HashMap;
use std::time::Duration;

use stubs::BrokerClient;
use system_tests::*;

const CRASHES: usize = 20;

/// A job as both ends print it: its topic and its two operands.
type JobKey = (&'static str, i64, i64);

/// The jobs a miner printed as acknowledged: `published X and Y to TOPIC (job N)`.
fn acknowledged(lines: &[String]) -> Vec<JobKey> {
    lines
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix("published ")?;
            let (operands, rest) = rest.split_once(" to ")?;
            let (x, y) = operands.split_once(" and ")?;
            let topic = match rest.split_once(' ')?.0 {
                "multiply" => "multiply",
                "divide" => "divide",
                _ => return None,
            };
            Some((topic, x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}

/// The jobs a factory printed as computed: `X * Y = P` or `X / Y = Q`.
fn computed(lines: &[String]) -> Vec<JobKey> {
    lines
        .iter()
        .filter_map(|line| {
            let (operation, _) = line.split_once(" = ")?;
            let mut words = operation.split(' ');
            let x = words.next()?.parse().ok()?;
            let topic = match words.next()? {
                "*" => "multiply",
                "/" => "divide",
                _ => return None,
            };
            let y = words.next()?.parse().ok()?;
            Some((topic, x, y))
        })
        .collect()
}

/// The ready and in-flight jobs of every topic, once the broker answers.
async fn unsettled(client: &BrokerClient) -> Option<u64> {
    let stats = client.stats(tarpc::context::current()).await.ok()?;
    Some(
        stats
            .topics
            .iter()
            .map(|topic| topic.ready + topic.in_flight)
            .sum(),
    )
}

/// A small random generator, seeded, so that a failing run can be told by its seed.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

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

    let reconnecting = ["--broker", &broker_address, "--give-up-after", "120s"];
    let miners: Vec<Process> = ["multiply", "divide"]
        .into_iter()
        .map(|topic| {
            let mut args = reconnecting.to_vec();
            args.extend([
                "--topic",
                topic,
                "--interval",
                "0",
                "--concurrency",
                "8",
                "--buffer",
                "500",
            ]);
            Process::start("miner", &args)
        })
        .collect();
    let factories: Vec<Process> = (0..2)
        .map(|_| {
            let mut args = reconnecting.to_vec();
            args.extend(["--port", "0", "--no-pipeline", "--prefetch", "8"]);
            Process::start("factory", &args)
        })
        .collect();
    let acknowledged_so_far = || -> usize {
        miners
            .iter()
            .map(|miner| miner.count_lines("published "))
            .sum()
    };

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
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
    eventually_async("every stored job is settled", async || {
        unsettled(&client).await == Some(0)
    })
    .await;

    let mut completions: HashMap<JobKey, usize> = HashMap::new();
    for factory in &factories {
        for key in computed(&factory.lines()) {
            *completions.entry(key).or_default() += 1;
        }
    }
    let missing: Vec<&JobKey> = acknowledged
        .iter()
        .filter(|key| !completions.contains_key(key))
        .collect();
    let duplicates: usize = acknowledged
        .iter()
        .map(|key| completions.get(key).copied().unwrap_or(0).saturating_sub(1))
        .sum();
    println!(
        "{CRASHES} crashes: {} jobs acknowledged, {} completed at least once, {} missing, {duplicates} completed more than once",
        acknowledged.len(),
        acknowledged.len() - missing.len(),
        missing.len(),
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged jobs were never completed, the first: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        acknowledged.len() >= 1_000,
        "too little load to test anything: {} jobs",
        acknowledged.len()
    );
}
