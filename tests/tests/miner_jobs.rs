//! `miner --job x,y[,z]` and `miner::publish_jobs`: exactly the jobs chosen, in the order given,
//! zero and negative operands included; a job that is not one is a usage error.

use std::net::SocketAddr;
use std::process::{Command, Output};

use broker::{Outcome, Settings};
use factory::cli::LabTopic::Divide;
use stubs::{Job, Pair, Triplet};
use system_tests::*;

/// The exit code of a usage error, as clap gives it.
const USAGE_ERROR: i32 = 2;

/// `miner` run to its end with `args`, against a broker address where nothing listens, so that
/// a miner that wrongly started publishing fails instead of finding someone's broker.
async fn run_miner(args: &[&str]) -> Output {
    let nobody = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(program("miner"));
    command.args(["--broker", &nobody]).args(args);
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run the miner")
}

/// The job id at the end of a miner's line `published <job> to <topic> (job <id>)`.
fn job_id_of(line: &str) -> u64 {
    line.strip_suffix(')')
        .and_then(|rest| rest.rsplit_once("(job "))
        .and_then(|(_, id)| id.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miner_job_publishes_exactly_the_jobs_given_in_order_and_exits() {
    let port = free_port().to_string();
    let mut broker = Process::start("broker", &["--port", &port, "--http", "off"]);
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = broker.client_when_up(address).await;
    let address = address.to_string();
    let _factory = factory_process_on(&client, &address, "divide").await;

    let mut miner = Process::start(
        "miner",
        &[
            "--broker", &address, "--topic", "divide", "--job", "5,0", "--job", "12,-4",
        ],
    );
    let status = miner.exit_status().await;
    assert!(status.success(), "{status}: {}", miner.last_errors(10));
    eventually("the miner's two lines are read", || {
        miner.lines().len() == 2
    })
    .await;
    let lines = miner.lines();
    assert!(
        lines[0].starts_with("published 5 and 0 to divide (job "),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("published 12 and -4 to divide (job "),
        "{lines:?}"
    );
    assert!(
        job_id_of(&lines[0]) < job_id_of(&lines[1]),
        "ids in the order published: {lines:?}"
    );

    let expected = [
        "Factory.Divide of 5 and 0 failed: division by zero",
        "Factory.Divide of 12 and -4 is -3",
    ];
    eventually("the broker prints both results", || {
        let printed = broker.lines();
        expected
            .iter()
            .all(|line| printed.iter().any(|printed| printed == line))
    })
    .await;
    let stats = client.stats(tarpc::context::current()).await.unwrap();
    let divide = stats.topics.iter().find(|t| t.name == "divide").unwrap();
    assert_eq!(divide.published, 2, "exactly the jobs given");
}

#[tokio::test]
async fn a_job_that_is_not_two_or_three_integers_is_a_usage_error() {
    for job in ["1", "1,2,3,4", "a,b", "99999999999999999999,1"] {
        let output = run_miner(&["--job", job]).await;
        assert_eq!(output.status.code(), Some(USAGE_ERROR), "--job {job}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("error: invalid value '{job}' for '--job"))
                && first.contains("12,34"),
            "--job {job}: {stderr}"
        );
    }
}

#[tokio::test]
async fn job_with_a_random_job_option_is_a_usage_error() {
    let output = run_miner(&["--job", "1,2", "--count", "3"]).await;
    assert_eq!(output.status.code(), Some(USAGE_ERROR));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: the argument '--job <X,Y[,Z]>' cannot be used with '--count"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_jobs_returns_the_ids_in_the_order_of_the_jobs() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let _factory = lab_factory(&broker, &[Divide], false).await;
    let jobs: [Job; 3] = [
        Pair { x: 5, y: 0 }.into(),
        Pair { x: 12, y: -4 }.into(),
        Triplet { x: 0, y: -7, z: 2 }.into(),
    ];
    let link = transport::LinkConfig::to(broker.address.to_string());
    let job_ids = miner::publish_jobs(link, "divide", miner::cli::DEFAULT_BUFFER, &jobs)
        .await
        .expect("the broker takes the jobs");
    assert_eq!(job_ids.len(), jobs.len());

    let expected = [
        "Factory.Divide of 5 and 0 failed: division by zero",
        "Factory.Divide of 12 and -4 is -3",
        "Factory.Divide of 0, -7 and 2 is 0",
    ];
    eventually("the three jobs are settled", || {
        recorder.outcomes().len() == jobs.len()
    })
    .await;
    let outcomes = recorder.outcomes();
    for (job_id, expected) in job_ids.iter().zip(expected) {
        let outcome = outcomes
            .iter()
            .find(|outcome| match outcome {
                Outcome::Completed { job_id: id, .. } | Outcome::Failed { job_id: id, .. } => {
                    id == job_id
                }
                Outcome::Requeued { .. } | Outcome::Undeliverable { .. } => false,
            })
            .unwrap_or_else(|| panic!("job {job_id} is settled: {outcomes:?}"));
        assert_eq!(outcome.to_string(), expected, "job {job_id}");
    }
}

#[tokio::test]
async fn publish_jobs_says_plainly_that_the_broker_is_unreachable() {
    let link = transport::LinkConfig::to(format!("127.0.0.1:{}", free_port()));
    let error = miner::publish_jobs(
        link,
        "divide",
        miner::cli::DEFAULT_BUFFER,
        &[Pair { x: 1, y: 2 }.into()],
    )
    .await
    .expect_err("nothing listens there");
    assert!(
        matches!(error, miner::MinerError::BrokerUnreachable(_)),
        "{error:?}"
    );
}
