//! `--data-dir`: the jobs a broker acknowledged outlive it, through a SIGKILL, and a data dir
//! serves one broker at a time. Real broker processes; the factory runs in this process.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use factory::cli::LabTopic::Multiply;
use stubs::{ChannelRequest, Job, Pair, PublishBatch};
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
    client
        .create_channel(
            tarpc::context::current(),
            ChannelRequest {
                topic: "multiply".into(),
                buffer: 1_000,
            },
        )
        .await
        .unwrap()
        .unwrap();
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

    let _factory = lab::RunningFactory::start(
        0,
        factory_config(address, &[Multiply], false),
        lab_console::Console::quiet(),
    )
    .await
    .unwrap();
    eventually("every acknowledged job is completed", || {
        second.count_lines("Factory.Multiply of ") == JOBS as usize
    })
    .await;
    // Each job, and each once: the products 3x for x in 0..JOBS.
    let mut products: Vec<i64> = second
        .lines()
        .iter()
        .filter(|line| line.starts_with("Factory.Multiply of "))
        .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
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
    let mut second = Command::new(program("broker"))
        .args([
            "--port",
            &second_port,
            "--http",
            "off",
            "--data-dir",
            &data_dir,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = second.kill();
            panic!("a second broker on the same data dir kept running");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("is in use by another broker"), "{stderr}");
    drop(first);
}
