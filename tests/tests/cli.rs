//! The programs' command lines: the wording of the errors a user meets first, and
//! `broker stats`.

use std::process::{Command, Output};

use broker::Settings;
use factory::cli::LabTopic::Multiply;
use system_tests::*;

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(program(name))
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("run {name}: {error}"))
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

/// An address where nothing listens: bound, then released.
fn nobody_listening() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[test]
fn every_program_says_plainly_that_the_broker_is_unreachable() {
    let address = nobody_listening();
    // The hint names the broker as these programs are run, by its path: it must be there.
    let broker = program("broker");
    for (name, args) in [
        ("miner", vec!["--broker", address.as_str()]),
        ("factory", vec!["--broker", address.as_str(), "--port", "0"]),
        ("broker", vec!["stats", "--broker", address.as_str()]),
    ] {
        let output = run(name, &args);
        assert!(!output.status.success(), "{name} fails");
        let stderr = stderr_of(&output);
        let expected = format!(
            "cannot reach broker at {address} (connection refused): start the broker ({} or cargo run -p broker), or give its address with --broker",
            broker.display()
        );
        assert!(stderr.ends_with(&expected), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
    }
}

#[test]
fn broker_and_factory_say_plainly_that_their_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = run("broker", &["--port", &port]);
    assert!(!output.status.success());
    assert_eq!(
        stderr_of(&output),
        format!("broker: cannot listen on 127.0.0.1:{port} (address in use): is another broker running? Stop it, or choose another --port")
    );
    let output = run("factory", &["--port", &port]);
    assert!(!output.status.success());
    assert_eq!(
        stderr_of(&output),
        format!("factory: cannot listen on 127.0.0.1:{port} (address in use): is another factory on that port? Choose another --port, or --port 0 for a free one")
    );
}

#[test]
fn the_lab_says_plainly_that_its_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = run("lab", &["--port", &port]);
    assert!(!output.status.success());
    assert_eq!(
        stderr_of(&output),
        format!("lab: cannot listen on 127.0.0.1:{port} (address in use): is a broker already running? Stop it, or use --port 0")
    );
}

#[test]
fn every_program_has_examples_in_its_help() {
    for name in ["broker", "factory", "miner", "lab"] {
        let output = run(name, &["--help"]);
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            help.contains("Examples:") && help.contains(&format!("cargo run -p {name}")),
            "{name}: {help}"
        );
    }
}

#[test]
fn no_help_text_tells_the_projects_history() {
    // Every program and subcommand, short and long help: a help text says why, and history
    // (issue numbers, what was measured once) belongs in commit messages and docs/.
    let commands: [(&str, &[&str]); 8] = [
        ("broker", &[]),
        ("broker", &["stats"]),
        ("broker", &["dead-letters"]),
        ("factory", &[]),
        ("miner", &[]),
        ("lab", &[]),
        ("lab", &["mark"]),
        ("lab", &["new"]),
    ];
    for (name, subcommand) in commands {
        for flag in ["-h", "--help"] {
            let args: Vec<&str> = subcommand.iter().copied().chain([flag]).collect();
            let output = run(name, &args);
            assert!(output.status.success(), "{name} {args:?}");
            let help = String::from_utf8_lossy(&output.stdout).to_lowercase();
            for history in ["issue", "measured"] {
                assert!(
                    !help.contains(history),
                    "{name} {args:?} mentions {history:?}:\n{help}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stats_reports_topics_and_subscribers_as_json_and_as_a_table() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let factory = start_factory(
        &broker,
        0,
        factory_config(broker.address, &[Multiply], false),
    )
    .await;
    let mut miner = lab::miner_config(broker.address, "multiply");
    miner.interval = std::time::Duration::ZERO;
    miner.count = Some(200);
    miner::run(miner, lab_console::Console::quiet(), Default::default())
        .await
        .unwrap();
    eventually("200 jobs are completed", || {
        recorder.completed("multiply").len() == 200
    })
    .await;

    let address = broker.address.to_string();
    let output = tokio::task::spawn_blocking(move || {
        run("broker", &["stats", "--broker", &address, "--json"])
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    let topic = &stats["topics"][0];
    assert_eq!(topic["name"], "multiply");
    assert_eq!(
        (topic["published"].as_u64(), topic["completed"].as_u64()),
        (Some(200), Some(200))
    );
    assert_eq!(
        (topic["ready"].as_u64(), topic["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(topic["subscribers"].as_u64(), Some(1));
    assert!(topic["rate_per_s"].as_f64().is_some());
    let p50 = topic["latency_us"]["p50"].as_u64().unwrap();
    let p99 = topic["latency_us"]["p99"].as_u64().unwrap();
    assert!(0 < p50 && p50 <= p99, "{p50} {p99}");
    let subscriber = &stats["subscribers"][0];
    assert_eq!(subscriber["address"], factory.address.to_string());
    assert_eq!(subscriber["callback"], "Factory.Multiply");
    assert_eq!(subscriber["completed"].as_u64(), Some(200));
    assert!(stats["uptime_s"].is_u64());

    let address = broker.address.to_string();
    let output =
        tokio::task::spawn_blocking(move || run("broker", &["stats", "--broker", &address]))
            .await
            .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    let row = table
        .lines()
        .find(|line| line.starts_with("multiply"))
        .expect("a row per topic");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        ["multiply", "10", "0", "0", "200", "200"],
        "{table}"
    );
}
