//! Part 2a (Divide) and Part 2b (the pipeline from Multiply to Divide).

use broker::Settings;
use factory::cli::LabTopic::{Divide, Multiply};
use stubs::{Callback, Job, Pair};
use system_tests::*;

#[tokio::test]
async fn divide_jobs_are_completed_with_quotients_truncated_toward_zero() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let _factory = lab_factory(&broker, &[Divide], false).await;
    let client = client(broker.address).await;

    let jobs = [
        (408, 12),
        (7, 2),
        (-7, 2),
        (999_999_999, 3),
        (1, 999_999_999),
    ];
    for (x, y) in jobs {
        publish(&client, "divide", Pair { x, y }).await;
    }
    eventually("5 divide jobs are completed", || {
        recorder.completed("divide").len() == 5
    })
    .await;
    let mut results: Vec<_> = recorder
        .completed("divide")
        .into_iter()
        .map(|c| {
            assert_eq!(c.callback, Callback::Divide);
            let Job::Pair(Pair { x, y }) = c.job else {
                panic!("a pair was published")
            };
            ((x, y), c.result)
        })
        .collect();
    results.sort();
    let mut expected = vec![
        ((408, 12), 34),
        ((7, 2), 3),
        ((-7, 2), -3),
        ((999_999_999, 3), 333_333_333),
        ((1, 999_999_999), 0),
    ];
    expected.sort();
    assert_eq!(results, expected);
}

#[tokio::test]
async fn a_divide_miner_and_a_multiply_miner_run_side_by_side() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let _factory = lab_factory(&broker, &[Multiply, Divide], false).await;
    let mut miners = Vec::new();
    for topic in ["multiply", "divide"] {
        let mut miner = lab::miner_config(broker.address, topic);
        miner.interval = std::time::Duration::ZERO;
        miner.count = Some(40);
        miners.push(spawn_miner(miner, Default::default()));
    }
    for miner in miners {
        assert_eq!(miner.await.unwrap().unwrap().published, 40);
    }
    eventually("both miners' jobs are completed", || {
        recorder.completed("multiply").len() == 40 && recorder.completed("divide").len() == 40
    })
    .await;
    for c in recorder.completed("divide") {
        let Job::Pair(Pair { x, y }) = c.job else {
            panic!("a pair was published")
        };
        assert_eq!(c.result, x / y);
    }
}

#[tokio::test]
async fn with_only_a_multiply_miner_the_pipeline_makes_divide_jobs_from_pairs_of_results() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let _factory = lab_factory(&broker, &[Multiply, Divide], true).await;
    let client = client(broker.address).await;

    for i in 1..=20_i64 {
        publish(
            &client,
            "multiply",
            Pair {
                x: i * 1_000,
                y: i + 7,
            },
        )
        .await;
    }
    eventually("20 multiply and 10 divide jobs are completed", || {
        recorder.completed("multiply").len() == 20 && recorder.completed("divide").len() == 10
    })
    .await;

    // Every multiply result is used by exactly one divide job, and each divide result is the
    // quotient of its two operands.
    let results = recorder.results("multiply");
    let mut operands = Vec::new();
    for c in recorder.completed("divide") {
        let Job::Pair(Pair { x, y }) = c.job else {
            panic!("the pipeline publishes pairs")
        };
        assert_eq!(c.result, x / y);
        operands.extend([x, y]);
    }
    assert_each_result_used_once(&results, &operands);
}
