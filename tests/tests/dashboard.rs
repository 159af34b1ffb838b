//! The dashboard in a real browser: headless Chromium loads the page while a miner runs; the
//! numbers it shows change and agree with `/api/stats`, a failed job is among its dead letters
//! and the throughput has a time axis; a screenshot is saved for docs/metrics.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use broker::Settings;
use factory::cli::LabTopic::Multiply;
use system_tests::*;

/// Where Debian's package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the page runs (in the browser's virtual time) before its DOM is read: a few polls.
const PAGE_TIME_MS: u32 = 3_000;

fn chromium(run: &str, extra: &[&str], url: &str) -> Vec<u8> {
    let profile = tempdir(run);
    assert!(
        Path::new(CHROMIUM).exists(),
        "the dashboard test needs Chromium: apt-get install chromium chromium-driver (.ci/run installs them)"
    );
    let output = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={PAGE_TIME_MS}"))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The number the page shows for `field` of topic `topic`.
fn shown(dom: &str, topic: &str, field: &str) -> u64 {
    let row_start = dom
        .find(&format!("data-topic=\"{topic}\""))
        .unwrap_or_else(|| panic!("a row for {topic} in:\n{dom}"));
    let row = &dom[row_start
        ..dom[row_start..]
            .find("</tr>")
            .map_or(dom.len(), |end| row_start + end)];
    let marker = format!("data-field=\"{field}\">");
    let value_start = row
        .find(&marker)
        .unwrap_or_else(|| panic!("{field} in {row}"))
        + marker.len();
    let value = &row[value_start..];
    value[..value.find('<').unwrap()]
        .parse()
        .unwrap_or_else(|_| panic!("a number for {field} in {row}"))
}

async fn api_completed(address: std::net::SocketAddr) -> u64 {
    let stats: serde_json::Value =
        serde_json::from_str(&http_get(address, "/api/stats").await).unwrap();
    stats["topics"][0]["completed"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_numbers_that_match_the_api() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let http_address = serve_http(&broker).await;
    let _factory = start_factory(
        &broker,
        0,
        factory_config(broker.address, &[Multiply], false),
    )
    .await;
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
    let miner = tokio::spawn(miner::run(
        miner,
        lab_console::Console::quiet(),
        stop_miner.clone(),
    ));
    eventually("jobs are completed", || {
        recorder.completed("multiply").len() >= 20
    })
    .await;

    let url = format!("http://{http_address}/");
    let first = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || chromium("first", &["--dump-dom"], &url))
            .await
            .unwrap()
    };
    let after_first = api_completed(http_address).await;
    let first = String::from_utf8_lossy(&first).into_owned();
    let dead_letter = first
        .split("</tr>")
        .find(|row| row.contains(&format!("data-job-id=\"{overflow}\"")))
        .unwrap_or_else(|| panic!("a dead letter for job {overflow} in:\n{first}"));
    assert!(
        dead_letter.contains(&format!("{} and 2", i64::MAX))
            && dead_letter.contains("integer overflow"),
        "{dead_letter}"
    );
    assert!(
        first.matches("class=\"time-tick\"").count() >= 2,
        "labelled ticks on the time axis:\n{first}"
    );
    let first = shown(&first, "multiply", "completed");
    assert!(
        first > 0 && first <= after_first,
        "page {first}, API {after_first}"
    );

    eventually("more jobs are completed", || {
        recorder.completed("multiply").len() as u64 > after_first + 20
    })
    .await;
    let before_second = api_completed(http_address).await;
    let second = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || chromium("second", &["--dump-dom"], &url))
            .await
            .unwrap()
    };
    let after_second = api_completed(http_address).await;
    let second = shown(&String::from_utf8_lossy(&second), "multiply", "completed");
    assert!(second > first, "the numbers change: {first} then {second}");
    assert!(
        (before_second..=after_second).contains(&second),
        "the page agrees with /api/stats: {second} not in {before_second}..={after_second}"
    );

    // The picture in docs/metrics.md is refreshed with PAIRBROKER_SCREENSHOT=docs/dashboard.png (a path from
    // the workspace's root); otherwise the screenshot goes to the temporary folder.
    let screenshot = match std::env::var_os("PAIRBROKER_SCREENSHOT") {
        Some(path) => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path),
        None => {
            std::env::temp_dir().join(format!("pairbroker-dashboard-{}.png", std::process::id()))
        }
    };
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let shot = format!("--screenshot={}", screenshot.display());
    tokio::task::spawn_blocking(move || {
        chromium(
            "screenshot",
            &[&shot, "--window-size=1300,900", "--hide-scrollbars"],
            &url,
        )
    })
    .await
    .unwrap();
    assert!(
        std::fs::metadata(&screenshot)
            .map(|m| m.len() > 1_000)
            .unwrap_or(false),
        "a screenshot at {}",
        screenshot.display()
    );

    stop_miner.cancel();
    miner.await.unwrap().unwrap();
}

/// A fresh, empty folder under the system's temporary folder.
fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pairbroker-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
