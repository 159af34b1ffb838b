//! The one-command lab: `cargo run -p lab` runs a broker, two factories and a miner.

use lab::cli::{run, LabArgs};

#[tokio::test]
async fn the_lab_runs_end_to_end_and_the_pipeline_feeds_divide() {
    let cli = LabArgs {
        port: 0,
        factories: 2,
        triplets: false,
        divide_miner: true,
        no_pipeline: false,
        interval: std::time::Duration::from_millis(1).into(),
        count: Some(20),
        seed: Some(5),
    };
    let summary = run(cli, Default::default()).await.expect("the lab runs");
    assert_eq!(summary.multiplied, 20);
    // 20 from the divide miner, and one per two multiply results within each factory.
    assert!(summary.divided >= 20 + 9, "{summary:?}");
    assert_eq!(summary.failed, 0);
}
