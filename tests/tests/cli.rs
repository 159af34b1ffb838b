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

#[tokio::test]
async fn every_program_says_plainly_that_the_broker_address_does_not_resolve() {
    /// How long a program may take to give up on a name: a local resolver answers for the
    /// reserved `.invalid` domain without asking anyone, so this is only a bound.
    const WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
    // `.invalid` is reserved never to resolve: only the local resolver is asked.
    let address = "no-such-host.invalid:8030";
    for (name, args) in [
        ("miner", vec!["--broker", address]),
        ("factory", vec!["--broker", address, "--port", "0"]),
        ("broker", vec!["stats", "--broker", address]),
    ] {
        let mut command = Command::new(program(name));
        command.args(&args);
        let started = std::time::Instant::now();
        // Fails the test unless the program exits, unsuccessfully, within the tests' deadline.
        let stderr = failed_start(command).await;
        let took = started.elapsed();
        let stderr = stderr.trim();
        assert!(took < WITHIN, "{name} gave up after {took:?}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
        assert!(
            stderr.contains(&format!(
                "cannot reach broker at {address} (cannot resolve it"
            )),
            "{name} names the address and says it does not resolve: {stderr}"
        );
    }
}

#[test]
fn broker_factory_and_lab_say_plainly_that_their_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    for (name, advice) in [
        (
            "broker",
            "is another broker running? Stop it, or choose another --port",
        ),
        (
            "factory",
            "is another factory on that port? Choose another --port, or --port 0 for a free one",
        ),
        (
            "lab",
            "is a broker already running? Stop it, or use --port 0",
        ),
    ] {
        let output = run(name, &["--port", &port]);
        assert!(!output.status.success(), "{name}");
        assert_eq!(
            stderr_of(&output),
            format!("{name}: cannot listen on 127.0.0.1:{port} (address in use): {advice}")
        );
    }
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
    let commands: [(&str, &[&str]); 9] = [
        ("broker", &[]),
        ("broker", &["stats"]),
        ("broker", &["dead-letters"]),
        ("broker", &["tls-init"]),
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

/// Every program and subcommand, with the headings its options are grouped under.
const HEADINGS: [(&str, &[&str], &[&str]); 9] = [
    (
        "broker",
        &[],
        &["Network", "Security", "Storage", "Limits", "Output"],
    ),
    ("broker", &["stats"], &["Broker", "Security", "Output"]),
    (
        "broker",
        &["dead-letters"],
        &["Broker", "Security", "Output"],
    ),
    ("broker", &["tls-init"], &["Output"]),
    (
        "miner",
        &[],
        &["Broker", "Security", "Jobs", "Pace", "Output"],
    ),
    (
        "factory",
        &[],
        &["Network", "Broker", "Security", "Work", "Output"],
    ),
    (
        "lab",
        &[],
        &["Broker", "Factories", "Miners", "Security", "Output"],
    ),
    (
        "lab",
        &["mark"],
        &["Factory", "Deadlines", "Security", "Output"],
    ),
    ("lab", &["new"], &["Output"]),
];

/// What `name subcommand flag` prints on standard output, where help goes.
fn help_of(name: &str, subcommand: &[&str], flag: &str) -> String {
    let args: Vec<&str> = subcommand.iter().copied().chain([flag]).collect();
    let output = run(name, &args);
    assert!(
        output.status.success(),
        "{name} {args:?}: {}",
        stderr_of(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn short_help_is_a_compact_list_and_long_help_explains_under_the_same_headings() {
    for (name, subcommand, headings) in HEADINGS {
        let short = help_of(name, subcommand, "-h");
        let long = help_of(name, subcommand, "--help");
        assert!(
            short.len() < long.len(),
            "{name} {subcommand:?}: -h is shorter than --help:\n{short}\n{long}"
        );
        for help in [&short, &long] {
            for heading in headings {
                assert!(
                    help.lines().any(|line| line == format!("{heading}:")),
                    "{name} {subcommand:?} has the heading {heading:?}:\n{help}"
                );
            }
        }
    }
}

#[test]
fn every_option_that_takes_a_value_shows_a_placeholder_saying_what_goes_there() {
    // The words a placeholder is made of: each says what to type, not the option's name again.
    const WORDS: &[&str] = &[
        "ADDR", "COMMAND", "DIR", "DURATION", "FILE", "FORMAT", "HOST", "IP", "N", "PART", "PORT",
        "SECRET", "TOPIC", "X", "Y", "Z", "always", "never", "off", "nats",
    ];
    for (name, subcommand, _) in HEADINGS {
        let help = help_of(name, subcommand, "-h");
        let options = help
            .lines()
            .map(str::trim_start)
            .filter(|line| line.starts_with("--"));
        for line in options {
            let (option, rest) = line.split_once(' ').unwrap_or((line, ""));
            if let Some(placeholder) = rest.strip_prefix('<') {
                let placeholder = &placeholder[..placeholder.find('>').unwrap()];
                for word in placeholder
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .filter(|word| !word.is_empty())
                {
                    assert!(
                        WORDS.contains(&word),
                        "{name} {subcommand:?} {option} <{placeholder}>: what is {word:?}?"
                    );
                }
                continue;
            }
            // No placeholder: the option must be a flag, which takes nothing after it.
            let args: Vec<&str> = subcommand
                .iter()
                .copied()
                .chain([option, "--no-such-option"])
                .collect();
            let stderr = stderr_of(&run(name, &args));
            assert!(
                stderr.contains("unexpected argument '--no-such-option'"),
                "{name} {args:?}: {option} takes a value but shows no placeholder: {stderr}"
            );
        }
    }
}

#[test]
fn broker_stats_and_dead_letters_have_examples_in_their_help() {
    for subcommand in ["stats", "dead-letters"] {
        for flag in ["-h", "--help"] {
            let help = help_of("broker", &[subcommand], flag);
            let examples = help
                .split_once("Examples:\n")
                .map(|(_, examples)| examples)
                .unwrap_or_else(|| panic!("broker {subcommand} {flag} has examples:\n{help}"));
            let lines = examples
                .lines()
                .filter(|line| line.contains(&format!("cargo run -p broker -- {subcommand}")))
                .count();
            assert!(
                (2..=4).contains(&lines),
                "broker {subcommand} {flag}:\n{help}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stats_reports_topics_and_subscribers_as_json_and_as_a_table() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let factory = lab_factory(&broker, &[Multiply], false).await;
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
