//! Brokers over one NATS JetStream (`--store nats://…`) share their topics: a job published
//! through one broker is done by a factory subscribed to another. Real broker processes and a
//! real nats-server.

use factory::cli::LabTopic::Multiply;
use stubs::{Job, Pair, PublishBatch};
use system_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_published_through_one_broker_is_done_by_a_factory_of_another() {
    const JOBS: i64 = 200;
    let nats = NatsServer::start();
    let ports = [free_port().to_string(), free_port().to_string()];
    let brokers: Vec<Process> = ports
        .iter()
        .map(|port| {
            Process::start(
                "broker",
                &["--port", port, "--http", "off", "--store", &nats.url],
            )
        })
        .collect();
    let address = |index: usize| -> std::net::SocketAddr {
        format!("127.0.0.1:{}", ports[index]).parse().unwrap()
    };
    let publisher = client_when_up(address(0)).await;
    client_when_up(address(1)).await;

    // The factory knows only the second broker.
    let factory = lab::RunningFactory::start(
        0,
        factory_config(address(1), &[Multiply], false),
        lab_console::Console::quiet(),
    )
    .await
    .unwrap();
    // The first broker takes the jobs.
    create_topic(&publisher, "multiply", 1_000).await;
    let jobs: Vec<Job> = (0..JOBS).map(|x| Pair { x, y: 3 }.into()).collect();
    let batch = PublishBatch {
        topic: "multiply".into(),
        jobs,
    };
    let published = publisher
        .publish_batch(tarpc::context::current(), batch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (published.job_ids.len(), published.error),
        (JOBS as usize, None)
    );

    eventually("the second broker's factory does every job", || {
        brokers[1].count_lines("Factory.Multiply of ") == JOBS as usize
    })
    .await;
    let mut products: Vec<i64> = brokers[1]
        .lines()
        .iter()
        .filter_map(|line| line.strip_prefix("Factory.Multiply of "))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    products.sort();
    assert_eq!(
        products,
        (0..JOBS).map(|x| 3 * x).collect::<Vec<i64>>(),
        "each job once"
    );
    assert_eq!(brokers[0].count_lines("Factory.Multiply of "), 0);
    // A factory that stops unsubscribes, and the broker lets its dispatcher finish first.
    factory.stop().await.unwrap();
}
