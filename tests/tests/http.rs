//! The broker's HTTP side: `/api/stats`, `/metrics` and the dashboard page.

use broker::Settings;
use factory::cli::LabTopic::Multiply;
use stubs::Pair;
use system_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_metrics_and_dashboard_are_served() {
    let (broker, recorder, http_address) = start_broker_with_http(Settings::default()).await;
    let _factory = lab_factory(&broker, &[Multiply], false).await;
    let client = client(broker.address).await;
    for x in 0..50 {
        publish(&client, "multiply", Pair { x, y: 2 }).await;
    }
    eventually("50 jobs are completed", || {
        recorder.completed("multiply").len() == 50
    })
    .await;

    let stats: serde_json::Value =
        serde_json::from_str(&http_get(http_address, "/api/stats").await).unwrap();
    let topic = &stats["topics"][0];
    assert_eq!(topic["name"], "multiply");
    assert_eq!(
        (topic["published"].as_u64(), topic["completed"].as_u64()),
        (Some(50), Some(50))
    );
    assert_eq!(stats["subscribers"].as_array().map(Vec::len), Some(1));

    let metrics = http_get(http_address, "/metrics").await;
    for line in [
        "pairbroker_jobs_published_total{topic=\"multiply\"} 50",
        "pairbroker_jobs_completed_total{topic=\"multiply\"} 50",
        "pairbroker_topic_capacity{topic=\"multiply\"} 10",
        "pairbroker_job_latency_seconds_count{topic=\"multiply\"} 50",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(
        metrics.contains("# TYPE pairbroker_job_latency_seconds histogram"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pairbroker_subscriber_jobs_completed_total{"),
        "{metrics}"
    );

    let page = http_get(http_address, "/").await;
    assert!(page.contains("<title>pairbroker</title>") && page.contains("/api/stats"));
    // The one address in the page is SVG's namespace, a name that is never fetched.
    let elsewhere = page.replace("\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !elsewhere.contains("http://") && !elsewhere.contains("https://"),
        "no file fetched from elsewhere"
    );
}
