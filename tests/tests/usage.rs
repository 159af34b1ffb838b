//! What a user types wrong, as the real programs answer it: a usage error (status 2) whose first
//! line says what went wrong and what to type instead, followed only by clap's tip and usage
//! lines; and a warning at start for options that do nothing with the others given.

use std::net::SocketAddr;
use std::process::Command;

use system_tests::*;

/// Runs program `name` with `args`, which it must refuse as a usage error: status 2, no panic,
/// and standard error in clap's shape, which is checked here. Returns the error's line and
/// its tips (without `tip: `).
fn refused(name: &str, args: &[&str]) -> (String, Vec<String>) {
    let output = Command::new(program(name))
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("run {name}: {error}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let run = format!("{name} {}", args.join(" "));
    assert_eq!(output.status.code(), Some(2), "{run}: {stderr}");
    assert!(!stderr.contains("panicked"), "{run}: {stderr}");
    assert!(output.stdout.is_empty(), "{run}: nothing on stdout");
    // clap's shape: the error in one line; then, a blank line before each, tips of one line,
    // the usage, and where to find more.
    let mut paragraphs = stderr.trim_end().split("\n\n");
    let error = paragraphs.next().unwrap_or_default();
    assert!(
        error.starts_with("error: ") && !error.contains('\n'),
        "{run}: the error is one line: {stderr}"
    );
    let mut tips = Vec::new();
    for paragraph in paragraphs {
        if let Some(tip) = paragraph.strip_prefix("  tip: ") {
            assert!(!tip.contains('\n'), "{run}: a tip is one line: {stderr}");
            tips.push(tip.to_owned());
        } else {
            assert!(
                paragraph.starts_with("Usage: ")
                    || paragraph == "For more information, try '--help'.",
                "{run}: only clap's tips and usage follow the error: {stderr}"
            );
        }
    }
    (error["error: ".len()..].to_owned(), tips)
}

#[test]
fn a_broker_address_that_is_not_host_colon_port_is_refused_before_any_connection() {
    for address in [
        "nonsense",
        "127.0.0.1",
        "127.0.0.1:99999",
        "127.0.0.1:8030,127.0.0.1",
    ] {
        for (name, args) in [
            ("miner", vec!["--broker", address]),
            ("factory", vec!["--port", "0", "--broker", address]),
            ("broker", vec!["stats", "--broker", address]),
            ("broker", vec!["dead-letters", "--broker", address]),
        ] {
            if name == "broker" && address.contains(',') {
                continue; // one broker to ask: a list is not an address
            }
            let (error, _) = refused(name, &args);
            assert!(
                error.contains("expected HOST:PORT, e.g. 127.0.0.1:8030"),
                "{name} {address}: {error}"
            );
            assert!(!error.contains("cannot reach"), "{name}: {error}");
        }
    }
}

#[test]
fn a_negative_number_is_out_of_range_rather_than_an_unknown_option() {
    for (name, args, expected) in [
        (
            "miner",
            &["--buffer", "-1"][..],
            "invalid value '-1' for '--buffer <N>': the buffer is a whole number, 1 or more",
        ),
        (
            "miner",
            &["--count", "-1"],
            "the count is a whole number, 0 or more",
        ),
        (
            "miner",
            &["--concurrency", "-1"],
            "the concurrency is from 1 to 256",
        ),
        (
            "factory",
            &["--prefetch", "-1"],
            "the prefetch is a whole number, 1 or more",
        ),
        (
            "factory",
            &["--port", "-1"],
            "invalid value '-1' for '--port <PORT>': the port is from 0 to 65535",
        ),
        ("broker", &["--port", "-1"], "the port is from 0 to 65535"),
        (
            "broker",
            &["--max-topics", "-1"],
            "invalid value '-1' for '--max-topics <N>': the topic limit is from 1 to 4096",
        ),
        (
            "broker",
            &["--threads", "-4"],
            "the thread count is from 1 to 256",
        ),
        (
            "broker",
            &["--max-deliveries", "-1"],
            "the delivery limit is a whole number, 0 or more",
        ),
    ] {
        let (error, _) = refused(name, args);
        assert!(error.contains(expected), "{name} {args:?}: {error}");
    }
}

#[test]
fn an_option_written_with_one_dash_gets_a_tip_naming_it_with_two() {
    for (name, args, typed, instead) in [
        ("miner", &["-topic", "divide"][..], "-topic", "--topic"),
        (
            "miner",
            &["-broker", "127.0.0.1:8030", "-count", "5"],
            "-broker",
            "--broker",
        ),
        ("factory", &["-port", "8051"], "-port", "--port"),
        // The Go factory's options: its address and port in one, and topics by exclusion.
        (
            "factory",
            &["-ip", "127.0.0.1:8051"],
            "-ip",
            "--ip IP --port PORT (the address and the port are two options)",
        ),
        (
            "factory",
            &["-no-divide"],
            "-no-divide",
            "--topics multiply",
        ),
        // Clap alone would show the help for `-h`ttp.
        ("broker", &["-http", "off"], "-http", "--http"),
        (
            "broker",
            &["stats", "-broker", "127.0.0.1:8030"],
            "-broker",
            "--broker",
        ),
    ] {
        let (error, tips) = refused(name, args);
        assert_eq!(
            error,
            format!("unexpected argument '{typed}' found"),
            "{name} {args:?}"
        );
        assert_eq!(
            tips,
            [format!("pairbroker's options take two dashes: {instead}")],
            "{name} {args:?}"
        );
    }
}

#[test]
fn a_duration_without_a_unit_is_refused_by_every_duration_option() {
    for (name, args) in [
        ("miner", &["--interval", "5"][..]),
        ("miner", &["--connect-timeout", "3"]),
        ("factory", &["--give-up-after", "60"]),
        ("broker", &["--fsync", "100"]),
        ("broker", &["--call-timeout", "10"]),
    ] {
        let (error, _) = refused(name, args);
        assert!(
            error.ends_with("give a unit, e.g. 5s or 100ms"),
            "{name} {args:?}: {error}"
        );
    }
}

#[tokio::test]
async fn options_that_do_nothing_with_the_others_given_are_warned_about_at_start() {
    let port = free_port().to_string();
    let mut broker = Process::start(
        "broker",
        &[
            "--port",
            &port,
            "--http",
            "off",
            "--fsync",
            "100ms",
            "--replicas",
            "3",
        ],
    );
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    broker.client_when_up(address).await;
    for warning in [
        "--fsync does nothing without --data-dir",
        "--replicas does nothing without --store",
    ] {
        eventually(&format!("the broker warns {warning:?}"), || {
            broker
                .last_errors(50)
                .lines()
                .any(|line| line.contains("WARN") && line.contains(warning))
        })
        .await;
    }
    broker.signal("TERM");
    assert!(broker.exit_status().await.success());
}

#[test]
fn the_hint_after_a_refused_connection_names_the_broker_as_the_program_was_run() {
    let factory = program("factory");
    program("broker");
    let directory = factory.parent().expect("the programs' directory");
    let nobody = format!("127.0.0.1:{}", free_port());
    let output = Command::new("./factory")
        .current_dir(directory)
        .args(["--port", "0", "--broker", &nobody])
        .output()
        .expect("run ./factory");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "factory: cannot reach broker at {nobody} (connection refused): start the broker (./broker or cargo run -p broker), or give its address with --broker"
        )
    );
}
