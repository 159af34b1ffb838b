//! Part 3: Triplets through Multiply, the pipeline and Divide, with Pairs still working.

use broker::Settings;
use factory::cli::LabTopic::{Divide, Multiply};
use stubs::{Job, Pair, Triplet};
use system_tests::*;

#[tokio::test]
async fn triplets_flow_through_multiply_the_pipeline_and_divide() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let _factory = lab_factory(&broker, &[Multiply, Divide], true).await;

    let mut miner = lab::miner_config(broker.address, "multiply");
    miner.interval = std::time::Duration::ZERO;
    miner.count = Some(30);
    miner.triplets = true;
    miner.max = miner::jobs::DEFAULT_MAX_TRIPLET;
    miner.seed = Some(3);
    miner::run(miner, lab_console::Console::quiet(), Default::default())
        .await
        .expect("the miner publishes its jobs");

    eventually("30 multiply and 10 divide triplets are completed", || {
        recorder.completed("multiply").len() == 30 && recorder.completed("divide").len() == 10
    })
    .await;
    let mut products = Vec::new();
    for c in recorder.completed("multiply") {
        let Job::Triplet(Triplet { x, y, z }) = c.job else {
            panic!("triplets were published")
        };
        assert_eq!(c.result, x * y * z);
        products.push(c.result);
    }
    let mut operands = Vec::new();
    for c in recorder.completed("divide") {
        let Job::Triplet(Triplet { x, y, z }) = c.job else {
            panic!("the pipeline groups triplets as triplets")
        };
        assert_eq!(c.result, (x / y) / z);
        operands.extend([x, y, z]);
    }
    assert_each_result_used_once(&products, &operands);
}

#[tokio::test]
async fn pairs_and_triplets_are_grouped_apart_in_the_same_topics() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let _factory = lab_factory(&broker, &[Multiply, Divide], true).await;
    let client = client(broker.address).await;

    // Two pairs and three triplets, interleaved: one divide Pair and one divide Triplet result.
    publish(&client, "multiply", Pair { x: 10, y: 10 }).await; // 100
    publish(&client, "multiply", Triplet { x: 2, y: 3, z: 100 }).await; // 600
    publish(&client, "multiply", Triplet { x: 1, y: 1, z: 6 }).await; // 6
    publish(&client, "multiply", Pair { x: 5, y: 1 }).await; // 5
    publish(&client, "multiply", Triplet { x: 1, y: 1, z: 2 }).await; // 2
    eventually("5 multiply and 2 divide jobs are completed", || {
        recorder.completed("multiply").len() == 5 && recorder.completed("divide").len() == 2
    })
    .await;
    let mut divides: Vec<(Job, i64)> = recorder
        .completed("divide")
        .into_iter()
        .map(|c| (c.job, c.result))
        .collect();
    divides.sort_by_key(|(job, _)| matches!(job, Job::Triplet(_)));
    assert_eq!(
        divides,
        vec![
            (Pair { x: 100, y: 5 }.into(), 20),
            (Triplet { x: 600, y: 6, z: 2 }.into(), 50),
        ]
    );
}
