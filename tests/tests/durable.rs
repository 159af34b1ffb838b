//! `--data-dir`: the jobs a broker acknowledged outlive it, through a SIGKILL, and a data dir
//! serves one broker at a time. Real broker processes; the factory runs in this process.

use std::process::Command;

use factory::cli::LabTopic::Multiply;
use stubs::{Job, Pair, PublishBatch};
use system_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_jobs_outlive_a_sigkilled_broker_and_are_delivered_after_a_restart() {
    const JOBS: i64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let port = free_port();
    let port_arg = port.to_string();
    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let args = [
        "--port",
        &port_arg,
        "--http",
        "off",
        "--data-dir",
        &data_dir,
    ];

    let first = Process::start("broker", &args);
    let client = client_when_up(address).await;
    create_multiply(&client, 1_000).await;
    let jobs: Vec<Job> = (0..JOBS).map(|x| Pair { x, y: 3 }.into()).collect();
    let mut acknowledged = Vec::new();
    for chunk in jobs.chunks(100) {
        let batch = PublishBatch {
            topic: "multiply".into(),
            jobs: chunk.to_vec(),
        };
        let published = client
            .publish_batch(tarpc::context::current(), batch)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(published.error, None);
        acknowledged.extend(published.job_ids);
    }
    assert_eq!(acknowledged.len(), JOBS as usize);
    first.kill();

    let second = Process::start("broker", &args);
    let client = client_when_up(address).await;
    let stats = client.stats(tarpc::context::current()).await.unwrap();
    let topic = stats
        .topics
        .iter()
        .find(|topic| topic.name == "multiply")
        .unwrap();
    assert_eq!((topic.capacity, topic.ready), (1_000, JOBS as u64));

    let _factory = multiply_factory(address).await;
    eventually("every acknowledged job is completed", || {
        second.count_lines("Factory.Multiply of ") == JOBS as usize
    })
    .await;
    // Each job, and each once: the products 3x for x in 0..JOBS.
    let mut products = products(&second);
    products.sort();
    assert_eq!(products, (0..JOBS).map(|x| 3 * x).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_data_dir_in_use_by_another_broker_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let first_port = free_port().to_string();
    let first = Process::start(
        "broker",
        &[
            "--port",
            &first_port,
            "--http",
            "off",
            "--data-dir",
            &data_dir,
        ],
    );
    client_when_up(([127, 0, 0, 1], first_port.parse().unwrap()).into()).await;

    let second_port = free_port().to_string();
    let mut second = Command::new(program("broker"));
    second.args([
        "--port",
        &second_port,
        "--http",
        "off",
        "--data-dir",
        &data_dir,
    ]);
    let stderr = failed_start(second).await;
    assert!(stderr.contains("is in use by another broker"), "{stderr}");
    drop(first);
}

/// A Multiply factory in this process, subscribed to the broker at `address`.
async fn multiply_factory(address: std::net::SocketAddr) -> lab::RunningFactory {
    lab::RunningFactory::start(
        0,
        factory_config(address, &[Multiply], false),
        lab_console::Console::quiet(),
    )
    .await
    .unwrap()
}

/// The products of the Multiply completions a broker printed, in order.
fn products(broker: &Process) -> Vec<i64> {
    broker
        .lines()
        .iter()
        .filter_map(|line| line.strip_prefix("Factory.Multiply of "))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// Creates the `multiply` topic with `buffer`.
async fn create_multiply(client: &stubs::BrokerClient, buffer: u32) {
    create_topic(client, "multiply", buffer).await;
}

/// The broker's arguments for a data dir, on a fixed port.
fn durable_broker_args<'a>(port: &'a str, data_dir: &'a str) -> [&'a str; 6] {
    ["--port", port, "--http", "off", "--data-dir", data_dir]
}

#[tokio::test]
async fn a_read_only_data_dir_is_refused_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    // A data dir with a topic in it, as an earlier broker left it.
    {
        let store = broker::queue::DiskStore::open(dir.path(), broker::queue::Fsync::Always, 10)
            .await
            .unwrap();
        broker::queue::JobStore::create_topic(&store, "multiply", 10)
            .await
            .unwrap();
    }
    let port = free_port().to_string();
    let read_only =
        format!("mount --bind {data_dir} {data_dir} && mount -o remount,bind,ro {data_dir}");
    let stderr = failed_start(with_mounts(
        &read_only,
        "broker",
        &durable_broker_args(&port, &data_dir),
    ))
    .await;
    println!("{stderr}");
    assert!(
        stderr.contains(&format!("cannot use the data dir {data_dir}"))
            && stderr.contains("Read-only file system"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_with_a_clear_error_and_loses_no_acknowledged_job() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let port = free_port();
    let port_arg = port.to_string();
    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    // A filesystem of 1 MiB, seen by this broker only.
    let small = format!("mount -t tmpfs -o size=1m tmpfs {data_dir}");
    let broker = Process::spawn(with_mounts(
        &small,
        "broker",
        &durable_broker_args(&port_arg, &data_dir),
    ));
    let client = client_when_up(address).await;
    create_multiply(&client, 1_000_000).await;

    // Distinct jobs (x, 1) until the disk is full.
    let mut acknowledged: Vec<i64> = Vec::new();
    let mut next_x = 0i64;
    let refusal = loop {
        assert!(next_x < 1_000_000, "the disk never filled up");
        let jobs: Vec<Job> = (next_x..next_x + 1_000)
            .map(|x| Pair { x, y: 1 }.into())
            .collect();
        let batch = PublishBatch {
            topic: "multiply".into(),
            jobs,
        };
        let published = client
            .publish_batch(tarpc::context::current(), batch)
            .await
            .unwrap();
        match published {
            Ok(published) if published.error.is_none() => {
                acknowledged.extend(next_x..next_x + published.job_ids.len() as i64);
            }
            Ok(published) => break published.error.unwrap(),
            Err(error) => break error,
        }
        next_x += 1_000;
    };
    assert!(
        matches!(&refusal, stubs::BrokerError::StorageFailed { reason } if reason.contains("No space left on device")),
        "{refusal:?}"
    );
    assert!(
        acknowledged.len() >= 1_000,
        "{} jobs before the disk filled",
        acknowledged.len()
    );
    println!(
        "the disk filled after {} acknowledged jobs: {refusal}",
        acknowledged.len()
    );
    // The broker still serves, and still refuses what it cannot keep.
    let again = client
        .publish(
            tarpc::context::current(),
            stubs::PublishRequest {
                topic: "multiply".into(),
                job: Pair { x: -1, y: 1 }.into(),
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(again, Err(stubs::BrokerError::StorageFailed { .. })),
        "{again:?}"
    );

    // Every acknowledged job is delivered.
    let _factory = multiply_factory(address).await;
    eventually("every acknowledged job is completed", || {
        let products: std::collections::HashSet<i64> = products(&broker).into_iter().collect();
        acknowledged.iter().all(|x| products.contains(x))
    })
    .await;
}
