//! A broker listens before its store is ready, and says so: a client that comes early is told
//! "not ready yet" at once, miners and factories given `--wait-for-broker` wait for it, and a
//! port already taken is still reported at once. Real broker, miner, factory and nats-server
//! processes.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use system_tests::*;
use transport::{AccessToken, ConnectError, HandshakeError};

/// How long after the broker and its clients the NATS server comes up.
const NATS_LATER: Duration = Duration::from_secs(10);

/// A nats-server with JetStream on `port` (and `monitor`), its store in `store`, as
/// `nats_harness` starts them.
fn nats_server(port: u16, monitor: u16, store: &std::path::Path) -> Process {
    let mut command = Command::new("nats-server");
    command
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["-m", &monitor.to_string(), "-sd"])
        .arg(store);
    Process::spawn(command)
}

/// What a pairbroker client is told by the broker at `address` now.
async fn handshake_with(address: &str) -> Result<(), ConnectError> {
    transport::connect_broker(address, Duration::from_secs(1), &AccessToken::none(), None)
        .await
        .map(drop)
}

fn is_not_ready(answer: &Result<(), ConnectError>) -> bool {
    matches!(
        answer,
        Err(ConnectError::Handshake {
            source: HandshakeError::NotReady,
            ..
        })
    )
}

/// The `field` count of topic `name` in `broker stats --json` (0 for no such topic).
fn count(stats: &Value, name: &str, field: &str) -> u64 {
    stats["topics"]
        .as_array()
        .and_then(|topics| topics.iter().find(|topic| topic["name"] == name))
        .map_or(0, |topic| topic[field].as_u64().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_started_with_a_broker_whose_nats_comes_up_later_wait_and_their_jobs_flow() {
    const JOBS: u64 = 50;
    let ports = free_ports(4);
    let (nats_port, monitor) = (ports[0], ports[1]);
    let (port, http) = (ports[2].to_string(), format!("127.0.0.1:{}", ports[3]));
    let address = format!("127.0.0.1:{port}");
    let store = format!("nats://127.0.0.1:{nats_port}");
    let nats_dir = tempfile::tempdir().unwrap();
    // Built first, so that the three start together.
    for name in ["broker", "factory", "miner"] {
        program(name);
    }

    let started = Instant::now();
    let mut broker = Process::start(
        "broker",
        &["--port", &port, "--http", &http, "--store", &store],
    );
    let waiting = ["--wait-for-broker", "60s"];
    let mut factory = Process::start(
        "factory",
        &[
            &["--broker", &address, "--port", "0"][..],
            &["--topics", "multiply", "--no-pipeline", "--quiet"],
            &waiting,
        ]
        .concat(),
    );
    let count_arg = JOBS.to_string();
    let mut miner = Process::start(
        "miner",
        &[
            &["--broker", &address, "--topic", "multiply"][..],
            &["--count", &count_arg, "--interval", "0", "--quiet"],
            &waiting,
        ]
        .concat(),
    );

    // While NATS is down, a client that comes is told at once that the broker is starting,
    // and so is a dashboard's visitor.
    let mut answer = handshake_with(&address).await;
    while !is_not_ready(&answer) && started.elapsed() < NATS_LATER {
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = handshake_with(&address).await;
    }
    assert!(
        is_not_ready(&answer),
        "{answer:?}; the broker's last words:\n{}",
        broker.last_errors(20)
    );
    let asked = Instant::now();
    let answer = handshake_with(&address).await;
    let took = asked.elapsed();
    assert!(is_not_ready(&answer), "{answer:?}");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    let page = try_http_get(http.parse().unwrap(), "/api/stats").await;
    assert!(
        page.as_ref()
            .is_err_and(|head| head.starts_with("HTTP/1.1 503")),
        "{page:?}"
    );
    assert!(
        started.elapsed() < NATS_LATER,
        "the checks outlasted the wait"
    );

    tokio::time::sleep_until((started + NATS_LATER).into()).await;
    for (name, process) in [("factory", &mut factory), ("miner", &mut miner)] {
        assert_eq!(
            process.has_exited(),
            None,
            "the {name} gave up before NATS came up; its last words:\n{}",
            process.last_errors(20)
        );
    }
    let _nats = nats_server(nats_port, monitor, nats_dir.path());
    let nats_up = Instant::now();

    let status = miner.exit_status().await;
    assert!(
        status.success(),
        "the miner ended with {status}; its last words:\n{}\nthe broker's:\n{}",
        miner.last_errors(20),
        broker.last_errors(20)
    );
    eventually_async("the broker reports every job completed", async || {
        stats_at(&address)
            .await
            .is_some_and(|stats| count(&stats, "multiply", "completed") == JOBS)
    })
    .await;
    eprintln!("every job done {:?} after NATS came up", nats_up.elapsed());
    assert_eq!(
        factory.has_exited(),
        None,
        "the factory stopped; its last words:\n{}",
        factory.last_errors(20)
    );
    let said = broker.last_errors(1_000);
    assert!(
        said.contains(&format!("waiting for JetStream at {store}: ")),
        "the broker says what it waits for: {said}"
    );
    let said = miner.last_errors(1_000);
    assert!(
        said.contains(&format!("waiting for the broker at {address}: ")),
        "the miner says what it waits for: {said}"
    );
    assert!(said.contains("not ready yet"), "{said}");
    assert_eq!(broker.has_exited(), None);
}

#[tokio::test]
async fn a_taken_port_is_reported_at_once_without_waiting_for_the_store() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken: SocketAddr = taken.local_addr().unwrap();
    // Nobody listens there: a broker that opened its store first would wait for ever.
    let store = format!("nats://127.0.0.1:{}", free_port());
    let free = free_port().to_string();
    let port = taken.port().to_string();
    let http = taken.to_string();
    for (args, expected) in [
        (
            ["--port", &port, "--http", "off"],
            format!("broker: cannot listen on {taken} (address in use)"),
        ),
        (
            ["--port", &free, "--http", &http],
            format!("broker: cannot listen for HTTP on {taken} (address in use)"),
        ),
    ] {
        let mut command = Command::new(program("broker"));
        command.args(args).args(["--store", &store]);
        let started = Instant::now();
        let stderr = failed_start(command).await;
        let took = started.elapsed();
        assert!(stderr.starts_with(&expected), "{stderr}");
        assert!(took < Duration::from_secs(5), "reported after {took:?}");
    }
}

#[tokio::test]
async fn a_broker_waiting_for_its_store_stops_when_told() {
    let port = free_port().to_string();
    let address = format!("127.0.0.1:{port}");
    let store = format!("nats://127.0.0.1:{}", free_port());
    let mut broker = Process::start(
        "broker",
        &["--port", &port, "--http", "off", "--store", &store],
    );
    eventually_async("the broker says it is not ready yet", async || {
        is_not_ready(&handshake_with(&address).await)
    })
    .await;
    broker.signal("TERM");
    let status = broker.exit_status().await;
    assert!(status.success(), "{status}: {}", broker.last_errors(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_and_a_factory_waiting_for_a_broker_that_never_comes_stop_at_ctrl_c() {
    // Well under the wait, and under the longest pause between two dials: only a wait that
    // watches Ctrl-C ends this soon.
    const AT_ONCE: Duration = Duration::from_secs(1);
    let nobody = format!("127.0.0.1:{}", free_port());
    let waiting = ["--broker", &nobody, "--wait-for-broker", "1h"];
    let factory = Process::start("factory", &[&waiting[..], &["--port", "0"]].concat());
    let miner = Process::start("miner", &[&waiting[..], &["--topic", "multiply"]].concat());
    for (name, mut process) in [("factory", factory), ("miner", miner)] {
        eventually(&format!("the {name} waits for its broker"), || {
            process.last_errors(20).contains("waiting for the broker")
        })
        .await;
        process.signal("INT");
        let stopped = Instant::now();
        let status = process.exit_status().await;
        let took = stopped.elapsed();
        // A program stopped by Ctrl-C ends as it does after a run: successfully.
        assert!(
            status.success(),
            "the {name} ended with {status}: {}",
            process.last_errors(20)
        );
        assert!(took < AT_ONCE, "the {name} took {took:?} to stop");
    }
}
