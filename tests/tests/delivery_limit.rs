//! `--max-deliveries`: a job that brings down every factory it reaches is dead-lettered after
//! that many deliveries, and every other job still completes. Real broker processes, and real
//! factory processes that end on a zero divisor, as a Go factory's panic ends it.

use std::net::SocketAddr;
use std::process::Command;

use stubs::{BrokerClient, DeadLetters, JobError, Pair, TopicReport};
use system_tests::*;

/// The limit the brokers of these tests run with.
const MAX_DELIVERIES: u32 = 3;

/// The job that ends its factory.
const POISON: Pair = Pair { x: 5, y: 0 };

/// A factory process on a free port that computes right, subscribed to `multiply` and `divide`
/// with prefetch 1, but that aborts on a zero divisor.
fn aborting_factory(broker: SocketAddr) -> (Process, SocketAddr) {
    let port = free_port();
    let mut command = Command::new(program_of("system-tests", "bad-factory"));
    command.args([
        "--mode",
        "abort-on-zero",
        "--port",
        &port.to_string(),
        "--broker",
        &broker.to_string(),
    ]);
    (Process::spawn(command), ([127, 0, 0, 1], port).into())
}

/// The dead letters of topic `divide`.
async fn divide_dead_letters(client: &BrokerClient) -> DeadLetters {
    client
        .dead_letters(tarpc::context::current(), stubs::DIVIDE_TOPIC.into())
        .await
        .unwrap()
        .unwrap()
}

/// The figures of topic `divide`.
async fn divide_figures(client: &BrokerClient) -> TopicReport {
    let stats = client.stats(tarpc::context::current()).await.unwrap();
    stats
        .topics
        .into_iter()
        .find(|topic| topic.name == stubs::DIVIDE_TOPIC)
        .expect("the factory created topic divide")
}

/// A broker process with [`MAX_DELIVERIES`], on ports of its own.
struct Broker {
    process: Process,
    client: BrokerClient,
    address: SocketAddr,
    http: SocketAddr,
    /// What it was started with, to start it again the same.
    args: Vec<String>,
}

impl Broker {
    /// Starts a broker that keeps its topics as `store` says (no flag: in memory).
    async fn start(store: &[&str]) -> Self {
        let (port, http_port) = (free_port(), free_port());
        let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--http",
            &http.to_string(),
            "--max-deliveries",
            &MAX_DELIVERIES.to_string(),
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        args.extend(store.iter().map(|arg| arg.to_string()));
        Self::start_with(args, ([127, 0, 0, 1], port).into(), http).await
    }

    async fn start_with(args: Vec<String>, address: SocketAddr, http: SocketAddr) -> Self {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Process::start("broker", &words);
        let client = process.client_when_up(address).await;
        Self {
            process,
            client,
            address,
            http,
            args,
        }
    }

    /// Stops the broker with SIGTERM, as an operator would, and starts it again as it was.
    async fn restart(mut self) -> Self {
        self.process.signal("TERM");
        assert!(self.process.exit_status().await.success());
        Self::start_with(self.args, self.address, self.http).await
    }

    /// The lines the broker printed that start with `prefix`.
    fn lines_starting(&self, prefix: &str) -> Vec<String> {
        self.process
            .lines()
            .into_iter()
            .filter(|line| line.starts_with(prefix))
            .collect()
    }
}

/// Runs two multiply jobs, then four divide jobs with [`POISON`] second, through factories that
/// die on it, a new one for each that dies; checks that it is dead-lettered on its last
/// delivery, that the others complete, and what the broker shows of it. Returns the broker and
/// the dead letter's error.
async fn a_poison_job_is_dead_lettered_after_the_limit(store: &[&str]) -> (Broker, JobError) {
    let broker = Broker::start(store).await;
    let address = broker.address;
    let (mut factory, factory_address) = aborting_factory(address);
    eventually_async("the factory subscribes to both topics", async || {
        let stats = broker
            .client
            .stats(tarpc::context::current())
            .await
            .unwrap();
        stats
            .subscribers
            .iter()
            .filter(|subscriber| subscriber.address == factory_address.to_string())
            .count()
            == 2
    })
    .await;

    // Multiply first, done before any factory dies: only the divide jobs meet the poison.
    publish(&broker.client, "multiply", Pair { x: 2, y: 3 }).await;
    publish(&broker.client, "multiply", Pair { x: 4, y: 5 }).await;
    eventually("the multiply jobs are completed", || {
        broker.process.count_lines("Factory.Multiply of ") == 2
    })
    .await;
    let divide = [
        Pair { x: 10, y: 2 },
        POISON,
        Pair { x: 9, y: 3 },
        Pair { x: 8, y: 4 },
    ];
    let mut poison_id = None;
    for pair in divide {
        let id = publish(&broker.client, "divide", pair).await;
        if pair == POISON {
            poison_id = Some(id);
        }
    }

    // Each delivery of the poison ends its factory; a new one takes it next, at the head.
    for deliveries in 1..=u64::from(MAX_DELIVERIES) {
        let status = factory.exit_status().await;
        assert!(!status.success(), "the factory aborts on the zero divisor");
        eventually_async("the broker settles the failed delivery", async || {
            let figures = divide_figures(&broker.client).await;
            figures.requeued + figures.undeliverable == deliveries
        })
        .await;
        (factory, _) = aborting_factory(address);
    }
    eventually("every other divide job is completed", || {
        broker.process.count_lines("Factory.Divide of ") == divide.len()
    })
    .await;

    for line in [
        "Factory.Multiply of 2 and 3 is 6",
        "Factory.Multiply of 4 and 5 is 20",
        "Factory.Divide of 10 and 2 is 5",
        "Factory.Divide of 9 and 3 is 3",
        "Factory.Divide of 8 and 4 is 2",
    ] {
        assert_eq!(broker.lines_starting(line), [line]);
    }
    let figures = divide_figures(&broker.client).await;
    assert_eq!(
        (
            figures.completed,
            figures.failed,
            figures.undeliverable,
            figures.requeued,
            figures.ready,
            figures.in_flight
        ),
        (3, 1, 1, u64::from(MAX_DELIVERIES) - 1, 0, 0)
    );

    let dead = divide_dead_letters(&broker.client).await;
    assert_eq!((dead.total, dead.letters.len()), (1, 1));
    let letter = &dead.letters[0];
    assert_eq!(
        (Some(letter.job_id), letter.job),
        (poison_id, POISON.into())
    );
    let JobError::Undeliverable { deliveries, reason } = &letter.error else {
        panic!("dead-lettered as undeliverable: {letter:?}");
    };
    assert_eq!(*deliveries, MAX_DELIVERIES);
    assert!(!reason.is_empty());
    let lines = broker.lines_starting("Factory.Divide of 5 and 0");
    eprintln!("{}", lines.join("\n"));
    assert_eq!(
        lines,
        [format!(
            "Factory.Divide of 5 and 0 dead-lettered: delivered 3 times; every call failed: {reason}"
        )],
        "one line, the letter's reason"
    );

    let metrics = http_get(broker.http, "/metrics").await;
    let counted = "pairbroker_jobs_undeliverable_total{topic=\"divide\"} 1";
    assert!(
        metrics.lines().any(|line| line == counted),
        "{counted} in:\n{metrics}"
    );
    drop(factory);
    (broker, letter.error.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_kills_every_factory_it_reaches_is_dead_lettered_and_the_rest_complete() {
    a_poison_job_is_dead_lettered_after_the_limit(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disk_the_dead_letter_and_its_count_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (broker, error) =
        a_poison_job_is_dead_lettered_after_the_limit(&["--data-dir", data_dir]).await;

    let broker = broker.restart().await;
    let figures = divide_figures(&broker.client).await;
    assert_eq!(
        (figures.failed, figures.undeliverable, figures.ready),
        (1, 1, 0)
    );
    let dead = divide_dead_letters(&broker.client).await;
    let errors: Vec<&JobError> = dead.letters.iter().map(|letter| &letter.error).collect();
    assert_eq!(errors, [&error]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_jetstream_a_job_that_kills_every_factory_is_dead_lettered_too() {
    let nats = NatsServer::start();
    a_poison_job_is_dead_lettered_after_the_limit(&["--store", &nats.url]).await;
}
