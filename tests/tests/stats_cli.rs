//! `broker stats` and `broker dead-letters` as a user runs them: real broker, factory and miner
//! processes, and the commands' output read through a pipe, as a shell would.

use std::net::SocketAddr;
use std::process::{Output, Stdio};

use system_tests::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// Which side of its column a cell keeps to, under its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Align {
    /// Text: starts where its header starts.
    Left,
    /// Numbers: end where their header ends.
    Right,
}
use Align::{Left, Right};

/// A broker process on a free port, with nothing on it yet, and its address.
async fn a_broker() -> (Process, String) {
    let port = free_port().to_string();
    let mut broker = Process::start("broker", &["--port", &port, "--http", "off"]);
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    broker.client_when_up(address).await;
    (broker, address.to_string())
}

/// A broker where the job `5,0` failed on the divide topic: its processes, kept running.
struct FailedDivision {
    address: String,
    /// The address of the factory that failed the job, as the broker reports it.
    factory: String,
    /// The failed job's id, as the miner printed it.
    job_id: String,
    _processes: [Process; 2],
}

async fn a_failed_division() -> FailedDivision {
    let (broker, address) = a_broker().await;
    let client = client_when_up(address.parse().unwrap()).await;
    let factory = factory_process_on(&client, &address, "divide").await;
    let mut miner = Process::start(
        "miner",
        &["--broker", &address, "--topic", "divide", "--job", "5,0"],
    );
    let status = miner.exit_status().await;
    assert!(status.success(), "{status}: {}", miner.last_errors(10));
    eventually_async("the job fails", async || {
        let stats = client.stats(tarpc::context::current()).await;
        stats.is_ok_and(|stats| stats.topics.iter().any(|t| t.failed == 1))
    })
    .await;
    eventually("the miner's line is read", || miner.lines().len() == 1).await;
    let line = &miner.lines()[0];
    let job_id = line
        .strip_suffix(')')
        .and_then(|rest| rest.rsplit_once("(job "))
        .map(|(_, id)| id.to_owned())
        .unwrap_or_else(|| panic!("a job id in {line:?}"));
    let stats = client.stats(tarpc::context::current()).await.unwrap();
    FailedDivision {
        address,
        factory: stats.subscribers[0].address.clone(),
        job_id,
        _processes: [broker, factory],
    }
}

/// `broker ARGS` run to its end.
async fn broker_command(args: &[&str]) -> Output {
    let output = Command::new(program("broker"))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    timeout(WAIT, output)
        .await
        .unwrap_or_else(|_| panic!("broker {args:?} ends within {WAIT:?}"))
        .expect("run the broker program")
}

/// `broker ARGS` run to a successful end: its standard output.
async fn broker_output(args: &[&str]) -> String {
    let output = broker_command(args).await;
    assert!(
        output.status.success(),
        "broker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// `broker stats --watch` with its standard output and error piped to this test.
fn watch(address: &str, json: bool) -> Child {
    let mut command = Command::new(program("broker"));
    command.args(["stats", "--watch", "--broker", address]);
    if json {
        command.arg("--json");
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start broker stats --watch")
}

/// The tables of a command's output, each a header line and its rows, in order.
fn tables(text: &str) -> Vec<Vec<&str>> {
    text.split("\n\n")
        .map(|block| block.lines().collect::<Vec<_>>())
        .filter(|lines| lines.len() > 1)
        .collect()
}

/// The character columns where `header` starts and ends in a header line.
fn columns_of(headers: &str, header: &str) -> (usize, usize) {
    let mut searched = 0;
    for word in headers.split_whitespace() {
        let start = searched + headers[searched..].find(word).unwrap();
        searched = start + word.len();
        if word == header {
            return (start, searched);
        }
    }
    panic!("no header {header} in {headers:?}")
}

/// The cell of `row` under `header`, failing the test unless the cell starts in the column
/// where the header starts (`Left`) or ends in the column where it ends (`Right`). Cells are
/// two spaces apart or more; a cell may hold single spaces.
fn cell_under<'a>(headers: &str, row: &'a str, header: &str, align: Align) -> &'a str {
    let (start, end) = columns_of(headers, header);
    let at = |column: usize| row.as_bytes().get(column).copied().unwrap_or(b' ');
    match align {
        Left => {
            assert!(
                at(start) != b' ' && (start == 0 || at(start - 1) == b' '),
                "{header} starts at column {start}, and so should its cell:\n{headers}\n{row}"
            );
            let rest = &row[start..];
            &rest[..rest.find("  ").unwrap_or(rest.len())]
        }
        Right => {
            assert!(
                end <= row.len() && at(end - 1) != b' ' && at(end) == b' ',
                "{header} ends at column {end}, and so should its cell:\n{headers}\n{row}"
            );
            let before = &row[..end];
            &before[before.rfind("  ").map_or(0, |gap| gap + 2)..]
        }
    }
}

/// Every cell of `row` by its header, each checked to keep to its side of its column: the
/// headers in `text` keep left, the others right.
fn cells<'a>(headers: &'a str, row: &'a str, text: &[&str]) -> Vec<(&'a str, &'a str)> {
    headers
        .split_whitespace()
        .map(|header| {
            let align = if text.contains(&header) { Left } else { Right };
            (header, cell_under(headers, row, header, align))
        })
        .collect()
}

/// The row of `table` for `topic`, failing the test with the whole `output` if there is none.
fn row_of<'a>(table: &[&'a str], topic: &str, output: &str) -> &'a str {
    table
        .iter()
        .find(|line| line.starts_with(&format!("{topic} ")))
        .unwrap_or_else(|| panic!("a row for {topic}:\n{output}"))
}

/// The cell under `header` among `cells`.
fn cell<'a>(cells: &[(&str, &'a str)], header: &str) -> &'a str {
    cells
        .iter()
        .find(|(name, _)| *name == header)
        .unwrap_or_else(|| panic!("a cell under {header} in {cells:?}"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_watch_piped_into_a_reader_that_leaves_after_one_line_ends_quietly() {
    let (_broker, address) = a_broker().await;
    let mut stats = watch(&address, false);
    let mut lines = BufReader::new(stats.stdout.take().expect("piped")).lines();
    let first = timeout(WAIT, lines.next_line())
        .await
        .expect("a first line within WAIT")
        .expect("read standard output")
        .expect("a line");
    assert!(first.starts_with("broker up "), "{first:?}");
    // The reader leaves, as `head -1` does once it has its line.
    drop(lines);
    let status = timeout(WAIT, stats.wait())
        .await
        .expect("broker stats ends once nobody reads it")
        .expect("wait for broker stats");
    let mut stderr = String::new();
    stats
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .await
        .expect("read standard error");
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panic"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_watch_into_a_pipe_writes_each_snapshot_after_a_blank_line_without_terminal_codes() {
    let (_broker, address) = a_broker().await;
    let mut stats = watch(&address, false);
    let mut lines = BufReader::new(stats.stdout.take().expect("piped")).lines();
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|l: &&String| l.starts_with("broker up "))
        .count()
        < 2
    {
        let line = timeout(WAIT, lines.next_line())
            .await
            .expect("a second snapshot within WAIT")
            .expect("read standard output")
            .expect("a line");
        seen.push(line);
    }
    stats.kill().await.expect("stop broker stats --watch");
    let text = seen.join("\n");
    assert!(!text.contains("\x1b["), "{text:?}");
    let second = seen.len() - 1;
    assert_eq!(
        seen[second - 1],
        "",
        "a blank line before each snapshot:\n{text}"
    );

    let mut stats = watch(&address, true);
    let mut lines = BufReader::new(stats.stdout.take().expect("piped")).lines();
    for _ in 0..2 {
        let line = timeout(WAIT, lines.next_line())
            .await
            .expect("a snapshot within WAIT")
            .expect("read standard output")
            .expect("a line");
        assert!(!line.contains("\x1b["), "{line:?}");
        let snapshot: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("one object a line: {line}"));
        assert!(snapshot["uptime_s"].is_u64(), "{line}");
    }
    stats
        .kill()
        .await
        .expect("stop broker stats --watch --json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_header_of_broker_stats_lines_up_with_its_column() {
    let failed = a_failed_division().await;
    let output = broker_output(&["stats", "--broker", &failed.address]).await;
    let tables = tables(&output);
    assert_eq!(tables.len(), 2, "topics and subscribers:\n{output}");

    let topics = &tables[0];
    let row = row_of(topics, "divide", &output);
    let divide = cells(topics[0], row, &["topic"]);
    assert_eq!(divide.len(), 14, "{output}");
    for (header, value) in [
        ("topic", "divide"),
        ("published", "1"),
        ("completed", "0"),
        ("failed", "1"),
        ("dead", "1"),
        ("subs", "1"),
    ] {
        assert_eq!(cell(&divide, header), value, "{header}:\n{output}");
    }

    let subscribers = &tables[1];
    let factory = cells(
        subscribers[0],
        subscribers[1],
        &["subscriber", "topic", "callback", "protocol"],
    );
    assert_eq!(factory.len(), 9, "{output}");
    for (header, value) in [
        ("subscriber", failed.factory.as_str()),
        ("topic", "divide"),
        ("callback", "Factory.Divide"),
        ("protocol", "tarpc"),
        ("prefetch", "1"),
        ("failed", "1"),
    ] {
        assert_eq!(cell(&factory, header), value, "{header}:\n{output}");
    }
    assert!(cell(&factory, "since").ends_with("s ago"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_without_completions_shows_dashes_for_its_latencies() {
    let (_broker, address) = a_broker().await;
    // No factory: the job waits, and the topic has nothing to measure.
    let mut miner = Process::start(
        "miner",
        &["--broker", &address, "--topic", "multiply", "--job", "1,2"],
    );
    assert!(
        miner.exit_status().await.success(),
        "{}",
        miner.last_errors(10)
    );

    let output = broker_output(&["stats", "--broker", &address]).await;
    let topics = &tables(&output)[0];
    let row = row_of(topics, "multiply", &output);
    let multiply = cells(topics[0], row, &["topic"]);
    assert_eq!(cell(&multiply, "ready"), "1", "{output}");
    assert_eq!(cell(&multiply, "p50_us"), "-", "{output}");
    assert_eq!(cell(&multiply, "p99_us"), "-", "{output}");

    let json = broker_output(&["stats", "--broker", &address, "--json"]).await;
    let stats: serde_json::Value = serde_json::from_str(&json).expect("one JSON object");
    assert_eq!(
        stats["topics"][0]["latency_us"],
        serde_json::json!({"p50": 0, "p99": 0}),
        "the JSON keeps its numbers: {json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_lists_a_failed_division_as_a_table_and_as_json() {
    let failed = a_failed_division().await;
    let output = broker_output(&["dead-letters", "--broker", &failed.address]).await;
    let tables = tables(&output);
    assert_eq!(
        tables.len(),
        2,
        "the letters, then a count per topic:\n{output}"
    );
    let letters = &tables[0];
    let row = row_of(letters, "divide", &output);
    let letter = cells(
        letters[0],
        row,
        &["topic", "failed_at", "factory", "job", "error"],
    );
    assert_eq!(cell(&letter, "job_id"), failed.job_id, "{output}");
    assert_eq!(cell(&letter, "factory"), failed.factory, "{output}");
    assert_eq!(cell(&letter, "job"), "5 and 0", "{output}");
    assert_eq!(cell(&letter, "error"), "division by zero", "{output}");
    let failed_at = cell(&letter, "failed_at");
    assert!(
        failed_at.len() == "2025-01-01T00:00:00Z".len() && failed_at.ends_with('Z'),
        "UTC, RFC 3339: {output}"
    );
    let counts = &tables[1];
    let row = row_of(counts, "divide", &output);
    let count = cells(counts[0], row, &["topic"]);
    assert_eq!(
        [count[1], count[2], count[3]],
        [("failed", "1"), ("kept", "1"), ("dropped", "0")],
        "{output}"
    );

    let json = broker_output(&[
        "dead-letters",
        "--broker",
        &failed.address,
        "--topic",
        "divide",
        "--json",
    ])
    .await;
    let report: serde_json::Value = serde_json::from_str(&json).expect("one JSON object");
    let topics = report["topics"].as_array().expect("a list of topics");
    assert_eq!(topics.len(), 1, "only --topic's: {json}");
    let divide = &topics[0];
    assert_eq!(divide["name"], "divide", "{json}");
    assert_eq!(
        (divide["total"].as_u64(), divide["dropped"].as_u64()),
        (Some(1), Some(0))
    );
    let letter = &divide["letters"][0];
    assert_eq!(letter["job_id"].to_string(), failed.job_id, "{json}");
    assert_eq!(letter["job"], "5 and 0", "{json}");
    assert_eq!(letter["operands"], serde_json::json!([5, 0]), "{json}");
    assert_eq!(letter["error"], "division by zero", "{json}");
    assert_eq!(letter["error_kind"], "divide_by_zero", "{json}");
    assert_eq!(letter["factory"], failed.factory.as_str(), "{json}");
    assert!(letter["failed_at_unix_ms"].as_u64().is_some(), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_a_topic_the_broker_does_not_have_is_a_one_line_error() {
    let (_broker, address) = a_broker().await;
    let output = broker_command(&["dead-letters", "--broker", &address, "--topic", "nope"]).await;
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "broker dead-letters: no such topic: \"nope\""
    );
    assert!(output.stdout.is_empty());
}
