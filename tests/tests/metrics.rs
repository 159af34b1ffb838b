//! `/metrics` as Prometheus's own tool reads it: `promtool` (Debian's `prometheus` package, which
//! `.ci/run` installs) run on a live broker's answers, in both formats.

use std::net::SocketAddr;
use std::process::Stdio;

use broker::Settings;
use factory::cli::LabTopic::{Divide, Multiply};
use lab::{RunningBroker, RunningFactory};
use stubs::Pair;
use system_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How to get `promtool` where `.ci/run` has not run: the one file out of Debian's package, so
/// that no Prometheus server is installed, let alone started.
const PROMTOOL_INSTALL: &str = "cd \"$(mktemp -d)\" && apt-get download prometheus && \
    dpkg-deb --fsys-tarfile prometheus_*.deb | tar -xO ./usr/bin/promtool \
    > /usr/local/bin/promtool && chmod 755 /usr/local/bin/promtool";

/// What Prometheus 2 sends by default: OpenMetrics first, the classic format as a fallback.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Multiply jobs completed; each divide job but the one by zero is too.
const JOBS: i64 = 20;

/// A broker with two topics that have seen traffic: completed jobs (so that the latency
/// histograms have data), a failed one and dead letters; and its HTTP side.
struct BusyBroker {
    http: SocketAddr,
    _broker: RunningBroker,
    _factory: RunningFactory,
}

async fn busy_broker() -> BusyBroker {
    let (broker, recorder, http) = start_broker_with_http(Settings::default()).await;
    let factory = lab_factory(&broker, &[Multiply, Divide], false).await;
    let client = client(broker.address).await;
    for x in 0..JOBS {
        publish(&client, "multiply", Pair { x, y: 3 }).await;
        publish(&client, "divide", Pair { x, y: x }).await;
    }
    eventually("the jobs are settled", || {
        recorder.completed("multiply").len() == JOBS as usize
            && recorder.completed("divide").len() == JOBS as usize - 1
            && recorder
                .outcomes()
                .iter()
                .any(|o| matches!(o, broker::Outcome::Failed { .. }))
    })
    .await;
    BusyBroker {
        http,
        _broker: broker,
        _factory: factory,
    }
}

/// GET /metrics with `accept`, if given: the answer's `Content-Type` and body.
async fn scrape(http: SocketAddr, accept: Option<&str>) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(http)
        .await
        .expect("connect to the HTTP side");
    let accept = accept.map_or(String::new(), |accept| format!("Accept: {accept}\r\n"));
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap_or_else(|_| panic!("no answer within {WAIT:?}"))
        .expect("read the answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no Content-Type in {head}"));
    (content_type, body.to_owned())
}

/// `promtool` with `args`, fed `input`, to its end within [`WAIT`]: whether it succeeded, and
/// what it printed. Fails the test, never skips it, if `promtool` is not on PATH.
async fn promtool(args: &[&str], input: &str) -> (bool, String) {
    let mut child = tokio::process::Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "promtool ({error}): this test needs it on PATH; .ci/run installs it from \
                 Debian's prometheus package, as, by hand and as root: {PROMTOOL_INSTALL}"
            )
        });
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).await.unwrap();
    // Closing its standard input ends what promtool reads.
    drop(stdin);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("promtool {args:?} did not finish within {WAIT:?}"))
        .expect("wait for promtool");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_check_metrics_finds_no_problem_in_the_classic_format() {
    let broker = busy_broker().await;
    let (content_type, text) = scrape(broker.http, None).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    for line in [
        "pairbroker_jobs_failed_total{topic=\"divide\"} 1",
        &format!("pairbroker_job_latency_seconds_count{{topic=\"multiply\"}} {JOBS}"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    let (passed, printed) = promtool(&["check", "metrics"], &text).await;
    assert!(
        passed && printed.is_empty(),
        "promtool check metrics:\n{printed}\non:\n{text}"
    );
}

/// `promtool check metrics` reads the classic format only; what reads OpenMetrics in promtool
/// is its importer, with Prometheus's own OpenMetrics parser. An importer wants a timestamp on
/// every sample, so the test adds one; everything else is the broker's answer as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_reads_every_sample_of_the_openmetrics_format() {
    let broker = busy_broker().await;
    let (content_type, text) = scrape(broker.http, Some(PROMETHEUS_ACCEPT)).await;
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(text.ends_with("\n# EOF\n"), "{text}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut samples = 0;
    let stamped: String = text
        .lines()
        .map(|line| {
            if line.starts_with('#') {
                format!("{line}\n")
            } else {
                samples += 1;
                format!("{line} {now}\n")
            }
        })
        .collect();
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("metrics.om");
    std::fs::write(&input, stamped).unwrap();
    let blocks = directory.path().join("blocks");
    let args = [
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        input.to_str().unwrap(),
        blocks.to_str().unwrap(),
    ];
    let (passed, printed) = promtool(&args, "").await;
    assert!(passed, "promtool {args:?}:\n{printed}\non:\n{text}");
    // The importer prints a table of its blocks; NUM SAMPLES is the fifth column.
    let imported: u64 = printed
        .lines()
        .skip_while(|line| !line.starts_with("BLOCK ULID"))
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(4)?.parse::<u64>().ok())
        .sum();
    assert_eq!(imported, samples, "every sample is read:\n{printed}");
}
