//! The dashboard in a real browser: ChromeDriver drives headless Chromium over WebDriver, which
//! opens the page once while a miner runs. The completed count the page shows grows by itself
//! and never runs ahead of `/api/stats`, a failed job is among its dead letters and the
//! throughput has a time axis; a screenshot is saved for docs/metrics.md.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::Settings;
use factory::cli::LabTopic::Multiply;
use fantoccini::{Client, ClientBuilder};
use serde_json::json;
use system_tests::*;

/// Where Debian's packages put the browser and its driver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// What to do when either is missing: the test fails with it, never skips.
const NEEDS_CHROMIUM: &str = "the dashboard test needs Chromium: apt-get install chromium chromium-driver (.ci/run installs them)";
/// What ChromeDriver prints once it listens, before the port it chose.
const LISTENING: &str = "ChromeDriver was started successfully on port ";
/// The time between the two reads of the page's count: two of the page's polls (it polls every
/// 500 ms), so a page that refreshes itself shows a larger count the second time.
const READ_GAP: Duration = Duration::from_secs(1);
/// The browser's window, the size of the picture in docs/metrics.md.
const WINDOW_SIZE: &str = "--window-size=1300,900";

/// ChromeDriver on a free loopback port, in a process group of its own that the Chromium it
/// starts joins: dropping this kills them all, also when the test panics.
struct ChromeDriver {
    child: Child,
    /// What it printed on standard output and error, for the failure messages.
    lines: Arc<Mutex<Vec<String>>>,
    /// Where it listens.
    url: String,
}

impl ChromeDriver {
    /// Starts ChromeDriver on a port of its choosing (`--port=0`); it accepts local connections
    /// only.
    async fn start() -> Self {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(Path::new(program).exists(), "{NEEDS_CHROMIUM}");
        }
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("start {CHROMEDRIVER}: {error}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        keep_lines(child.stdout.take().expect("piped stdout"), lines.clone());
        keep_lines(child.stderr.take().expect("piped stderr"), lines.clone());
        let mut driver = Self {
            child,
            lines,
            url: String::new(),
        };
        let mut port = None;
        let mut exited = None;
        lab::wait_until(WAIT, async || {
            port = driver.lines.lock().unwrap().iter().find_map(|line| {
                line.strip_prefix(LISTENING)?
                    .trim_end_matches('.')
                    .parse::<u16>()
                    .ok()
            });
            exited = driver.child.try_wait().expect("poll ChromeDriver");
            port.is_some() || exited.is_some()
        })
        .await;
        let port = port.unwrap_or_else(|| {
            panic!(
                "ChromeDriver did not listen within {WAIT:?} (exited: {exited:?}); it said:\n{}",
                driver.said()
            )
        });
        driver.url = format!("http://127.0.0.1:{port}");
        driver
    }

    /// Opens a browser: headless Chromium with a fresh profile in `profile`.
    async fn browser(&self, profile: &Path) -> Client {
        let options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                WINDOW_SIZE,
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "ChromeDriver at {} opened no browser: {error}; it said:\n{}",
                    self.url,
                    self.said()
                )
            })
    }

    fn said(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The whole group: ChromeDriver and every Chromium process it started.
        let group = -(self.child.id() as libc::pid_t);
        // SAFETY: kill(2) takes no pointers; the group is the one this test created.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Keeps each line `output` prints in `lines`, as it comes.
fn keep_lines(output: impl std::io::Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
}

/// Runs `script` in the page with `args` (its `arguments`) and returns what it returns.
async fn run(page: &Client, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
    page.execute(script, args)
        .await
        .unwrap_or_else(|error| panic!("run in the page: {error}\n{script}"))
}

/// The number the page shows now for `field` of topic `topic`, if it shows one.
async fn shown(page: &Client, topic: &str, field: &str) -> Option<u64> {
    let cell = run(
        page,
        "const cell = document.querySelector(
           `#topics tr[data-topic=\"${CSS.escape(arguments[0])}\"] td[data-field=\"${CSS.escape(arguments[1])}\"]`);
         return cell ? cell.textContent : null;",
        vec![json!(topic), json!(field)],
    )
    .await;
    cell.as_str()?.parse().ok()
}

/// The text of the page's row for dead letter `job_id`, if it shows one; cells joined by tabs.
async fn dead_letter_row(page: &Client, job_id: &str) -> Option<String> {
    let row = run(
        page,
        "const row = document.querySelector(
           `#dead-letters tr[data-job-id=\"${CSS.escape(arguments[0])}\"]`);
         return row ? [...row.cells].map(cell => cell.textContent).join('\\t') : null;",
        vec![json!(job_id)],
    )
    .await;
    row.as_str().map(str::to_owned)
}

async fn api_completed(address: std::net::SocketAddr) -> u64 {
    let stats: serde_json::Value =
        serde_json::from_str(&http_get(address, "/api/stats").await).unwrap();
    stats["topics"][0]["completed"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_numbers_that_match_the_api() {
    let (broker, recorder, http_address) = start_broker_with_http(Settings::default()).await;
    let _factory = lab_factory(&broker, &[Multiply], false).await;
    // A job the factory fails, for the page's dead letters.
    let overflow = stubs::Pair { x: i64::MAX, y: 2 };
    let overflow = publish(&client(broker.address).await, "multiply", overflow).await;
    eventually("the overflow is dead-lettered", || {
        recorder
            .outcomes()
            .iter()
            .any(|outcome| matches!(outcome, broker::Outcome::Failed { .. }))
    })
    .await;
    let stop_miner = tokio_util::sync::CancellationToken::new();
    let mut miner = lab::miner_config(broker.address, "multiply");
    miner.interval = Duration::from_millis(5);
    let miner = spawn_miner(miner, stop_miner.clone());

    // Made before the driver, so that it is removed after the browser is gone.
    let profile = tempfile::Builder::new()
        .prefix("pairbroker-dashboard-profile-")
        .tempdir()
        .expect("a temporary folder");
    let driver = ChromeDriver::start().await;
    let page = driver.browser(profile.path()).await;
    // The page is opened once: from here on, only its own polling changes what it shows.
    page.goto(&format!("http://{http_address}/"))
        .await
        .expect("open the dashboard");

    let mut first = 0;
    eventually_async("the page shows jobs completed", async || {
        first = shown(&page, "multiply", "completed").await.unwrap_or(0);
        first > 0
    })
    .await;
    let after_first = api_completed(http_address).await;
    assert!(
        first <= after_first,
        "the page shows no more than /api/stats: page {first}, API {after_first} right after"
    );
    // The point of the test: the same page, a little later, with the miner still running.
    tokio::time::sleep(READ_GAP).await;
    let second = shown(&page, "multiply", "completed")
        .await
        .expect("the page still shows the completed count");
    let after_second = api_completed(http_address).await;
    assert!(
        second > first,
        "the page updates itself: {first} then, {READ_GAP:?} later, {second}"
    );
    assert!(
        second <= after_second,
        "the page shows no more than /api/stats: page {second}, API {after_second} right after"
    );

    let overflow = overflow.to_string();
    let mut dead_letter = None;
    eventually_async("the page lists the dead letter", async || {
        dead_letter = dead_letter_row(&page, &overflow).await;
        dead_letter.is_some()
    })
    .await;
    let dead_letter = dead_letter.unwrap();
    assert!(
        dead_letter.contains(&format!("{} and 2", i64::MAX))
            && dead_letter.contains("integer overflow"),
        "{dead_letter}"
    );
    let ticks = run(
        &page,
        "return document.querySelectorAll('#chart .time-tick').length;",
        vec![],
    )
    .await;
    assert!(
        ticks.as_u64().is_some_and(|ticks| ticks >= 2),
        "labelled ticks on the time axis: {ticks}"
    );

    // The picture in docs/metrics.md is refreshed with PAIRBROKER_SCREENSHOT=docs/dashboard.png (a path from
    // the workspace's root); otherwise the screenshot goes to the temporary folder.
    let screenshot = match std::env::var_os("PAIRBROKER_SCREENSHOT") {
        Some(path) => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path),
        None => {
            std::env::temp_dir().join(format!("pairbroker-dashboard-{}.png", std::process::id()))
        }
    };
    let png = page.screenshot().await.expect("a screenshot of the page");
    assert!(png.len() > 1_000, "a screenshot of {} bytes", png.len());
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    std::fs::write(&screenshot, png)
        .unwrap_or_else(|error| panic!("write {}: {error}", screenshot.display()));

    page.close().await.expect("close the browser");
    drop(driver);
    stop_miner.cancel();
    miner.await.unwrap().unwrap();
}
