//! The lab's own Go programs against our broker: a Go miner and students' Go factories
//! (`tests/go`) speak net/rpc with gob, as the lab's do, on the broker's usual port beside our
//! own miners and factories. Every program here is a real process.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stubs::{BrokerClient, ChannelRequest, TopicReport};
use system_tests::go::start_go;
use system_tests::*;

/// How `broker stats --json` marks a subscriber that the broker calls over Go's net/rpc.
const GO_PROTOCOL: &str = "go-net-rpc";

/// The broker's result lines start with the callback's name.
const MULTIPLY: &str = "Factory.Multiply";
const DIVIDE: &str = "Factory.Divide";

/// How long a publish to a full topic is watched to stay waiting. The wrong outcomes (an
/// answer, an error, an exit) come within milliseconds; this only gives them their chance.
const HOLD: Duration = Duration::from_millis(500);

/// How long a process that has closed its sockets in dying may take to be reaped.
const REAPING: Duration = Duration::from_secs(1);

/// Our broker as a process on a free port, and a client of ours that asks it for its figures.
struct Broker {
    process: Process,
    address: String,
    client: BrokerClient,
}

impl Broker {
    /// Waits until the broker holds `count` subscriptions.
    async fn subscribers(&self, count: usize) {
        eventually_async(&format!("{count} subscriptions"), async || {
            self.client
                .stats(tarpc::context::current())
                .await
                .is_ok_and(|stats| stats.subscribers.len() == count)
        })
        .await;
    }

    /// Starts a broker with `extra` flags and waits until it answers.
    async fn start(extra: &[&str]) -> Self {
        let port = free_port().to_string();
        let mut args = vec!["--port", &port, "--http", "off"];
        args.extend_from_slice(extra);
        let mut process = Process::start("broker", &args);
        let address = format!("127.0.0.1:{port}");
        let client = process.client_when_up(address.parse().unwrap()).await;
        Self {
            process,
            address,
            client,
        }
    }

    /// The jobs the broker printed as computed by `callback`: their operands and result.
    fn results(&self, callback: &str) -> Vec<(Vec<i64>, i64)> {
        results(&self.process.lines(), callback)
    }

    /// The figures of `topic`, once it exists.
    async fn topic(&self, topic: &str) -> Option<TopicReport> {
        let stats = self.client.stats(tarpc::context::current()).await.ok()?;
        stats.topics.into_iter().find(|t| t.name == topic)
    }

    /// Waits until `topic` has completed `completed` jobs and holds none ready or in flight:
    /// after that no result line can come.
    async fn settles(&self, topic: &str, completed: u64) {
        eventually_async(
            &format!("{topic} has completed {completed} jobs and holds no other"),
            async || {
                self.topic(topic)
                    .await
                    .is_some_and(|t| (t.completed, t.ready, t.in_flight) == (completed, 0, 0))
            },
        )
        .await;
    }

    /// How many subscriptions the broker holds for the factory at `address`.
    async fn subscriptions_of(&self, address: &str) -> usize {
        match self.client.stats(tarpc::context::current()).await {
            Ok(stats) => stats
                .subscribers
                .iter()
                .filter(|s| s.address == address)
                .count(),
            Err(_) => 0,
        }
    }
}

/// Starts a Go factory on `port` serving `broker`, with `extra` flags, and waits until it says
/// it has subscribed to its topics.
async fn go_factory(broker: &Broker, port: u16, extra: &[&str]) -> Process {
    let factory = start_go_factory(broker, port, extra);
    let topics = if extra.contains(&"-no-divide") { 1 } else { 2 };
    let subscribed = lab::wait_until(WAIT, async || {
        factory.count_lines("subscribed to ") == topics
    })
    .await;
    assert!(
        subscribed,
        "the Go factory did not subscribe within {WAIT:?}: {}",
        factory.last_errors(10)
    );
    factory
}

/// Starts a Go factory on `port` serving `broker`, with `extra` flags; does not wait.
fn start_go_factory(broker: &Broker, port: u16, extra: &[&str]) -> Process {
    let ip = format!("127.0.0.1:{port}");
    let mut args = vec!["-ip", &ip, "-broker", &broker.address];
    args.extend_from_slice(extra);
    start_go("factory", &args)
}

/// Starts the Go miner against `broker` with `args`.
fn go_miner(broker: &Broker, args: &[&str]) -> Process {
    let mut all = vec!["-broker", &broker.address];
    all.extend_from_slice(args);
    start_go("miner", &all)
}

/// Waits until `miner` has exited with success and printed its total; returns the total.
async fn finished(miner: &mut Process) -> u64 {
    let status = miner.exit_status().await;
    assert!(
        status.success(),
        "the miner failed ({status}): {}",
        miner.last_errors(5)
    );
    eventually("the miner prints its total", || {
        published_total(&miner.lines()).is_some()
    })
    .await;
    published_total(&miner.lines()).expect("printed just now")
}

/// Result lines: `Factory.Multiply of 12 and 34 is 408`, `Factory.Multiply of 1, 2 and 3 is 6`.
fn results(lines: &[String], callback: &str) -> Vec<(Vec<i64>, i64)> {
    lines
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix(callback)?.strip_prefix(" of ")?;
            let (operands, result) = rest.rsplit_once(" is ")?;
            Some((operands_of(operands)?, result.parse().ok()?))
        })
        .collect()
}

/// `12 and 34`, or `1, 2 and 3`, as the broker and the Go miner print operands.
fn operands_of(text: &str) -> Option<Vec<i64>> {
    text.replace(" and ", ", ")
        .split(", ")
        .map(|operand| operand.parse().ok())
        .collect()
}

/// The jobs the Go miner printed as published: `published 12 and 34 to multiply`.
fn published_jobs(lines: &[String]) -> Vec<Vec<i64>> {
    lines
        .iter()
        .filter_map(|line| {
            let (operands, _topic) = line.strip_prefix("published ")?.rsplit_once(" to ")?;
            operands_of(operands)
        })
        .collect()
}

/// The Go miner's last line: `published 200 jobs`.
fn published_total(lines: &[String]) -> Option<u64> {
    lines.iter().rev().find_map(|line| {
        line.strip_prefix("published ")?
            .strip_suffix(" jobs")?
            .parse()
            .ok()
    })
}

/// How many operations `operator` (`*`, `/`) a Go factory printed (`12 * 34 = 408`).
fn operations(factory: &Process, operator: &str) -> usize {
    factory
        .lines()
        .iter()
        .filter(|line| line.contains(&format!(" {operator} ")) && line.contains(" = "))
        .count()
}

/// The multiset of `jobs`' operands, to compare jobs published with jobs completed.
fn tally<'a>(jobs: impl IntoIterator<Item = &'a Vec<i64>>) -> HashMap<&'a Vec<i64>, usize> {
    let mut tally = HashMap::new();
    for job in jobs {
        *tally.entry(job).or_default() += 1;
    }
    tally
}

/// Checks each product and returns the products, in the broker's order.
fn checked_products(completed: &[(Vec<i64>, i64)], operands: usize) -> Vec<i64> {
    completed
        .iter()
        .map(|(job, result)| {
            assert_eq!(job.len(), operands, "{job:?}");
            assert_eq!(*result, job.iter().product::<i64>(), "{job:?}");
            *result
        })
        .collect()
}

/// Checks each quotient, left to right, and returns the divide jobs' operands, flattened.
fn checked_quotients(completed: &[(Vec<i64>, i64)], operands: usize) -> Vec<i64> {
    completed
        .iter()
        .flat_map(|(job, result)| {
            assert_eq!(job.len(), operands, "{job:?}");
            let quotient = job[1..]
                .iter()
                .fold(job[0], |quotient, divisor| quotient / divisor);
            assert_eq!(*result, quotient, "{job:?}");
            job.clone()
        })
        .collect()
}

#[tokio::test]
async fn a_go_miner_through_our_broker_reaches_two_go_factories_each_job_once() {
    let broker = Broker::start(&[]).await;
    let factories = [
        go_factory(&broker, free_port(), &["-no-pipeline"]).await,
        go_factory(&broker, free_port(), &["-no-pipeline"]).await,
    ];

    let mut miner = go_miner(&broker, &["-count", "200", "-interval", "0"]);
    assert_eq!(finished(&mut miner).await, 200);
    broker.settles("multiply", 200).await;

    let completed = broker.results(MULTIPLY);
    checked_products(&completed, 2);
    let published = published_jobs(&miner.lines());
    assert_eq!(published.len(), 200);
    assert_eq!(
        tally(completed.iter().map(|(job, _)| job)),
        tally(&published),
        "each published job is completed once"
    );
    eventually("the Go factories print their 200 products", || {
        factories.iter().map(|f| operations(f, "*")).sum::<usize>() == 200
    })
    .await;
    for factory in &factories {
        assert!(operations(factory, "*") > 0, "a Go factory got no work");
    }
}

#[tokio::test]
async fn a_go_miner_reaches_a_rust_factory_and_a_rust_miner_reaches_a_go_factory() {
    let broker = Broker::start(&[]).await;

    // First only our factory, on multiply: the Go miner's jobs can only go to it.
    let rust_factory = rust_multiply_factory(&broker);
    broker.subscribers(1).await;
    let mut miner = go_miner(&broker, &["-count", "50", "-interval", "0"]);
    assert_eq!(finished(&mut miner).await, 50);
    broker.settles("multiply", 50).await;
    checked_products(&broker.results(MULTIPLY), 2);
    eventually("our factory prints its 50 products", || {
        operations(&rust_factory, "*") == 50
    })
    .await;

    // Then a Go factory, the only one on divide, and our miner publishing there.
    let factory = go_factory(&broker, free_port(), &["-no-pipeline"]).await;
    let mut rust_miner = Process::start(
        "miner",
        &[
            "--broker",
            &broker.address,
            "--topic",
            "divide",
            "--count",
            "50",
            "--interval",
            "0",
            "--seed",
            "2",
        ],
    );
    assert!(rust_miner.exit_status().await.success());
    broker.settles("divide", 50).await;
    checked_quotients(&broker.results(DIVIDE), 2);
    eventually("the Go factory prints its 50 quotients", || {
        operations(&factory, "/") == 50
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_factory_killed_under_load_loses_no_job() {
    const JOBS: u64 = 3_000;
    let broker = Broker::start(&[]).await;
    let survivor = go_factory(&broker, free_port(), &["-no-pipeline", "-no-divide"]).await;
    let victim_port = free_port();
    let victim = go_factory(&broker, victim_port, &["-no-pipeline", "-no-divide"]).await;

    let jobs = JOBS.to_string();
    let mut miner = go_miner(
        &broker,
        &["-count", &jobs, "-interval", "0", "-concurrency", "4"],
    );
    eventually("the factory to be killed has computed 100 jobs", || {
        operations(&victim, "*") >= 100
    })
    .await;
    assert!(
        miner.has_exited().is_none(),
        "the miner had finished before the kill: too little load to test anything"
    );
    victim.kill();
    let victim_address = format!("127.0.0.1:{victim_port}");
    eventually_async("the broker drops the killed factory", async || {
        broker.subscriptions_of(&victim_address).await == 0
    })
    .await;

    assert_eq!(finished(&mut miner).await, JOBS);
    broker.settles("multiply", JOBS).await;
    let completed = broker.results(MULTIPLY);
    checked_products(&completed, 2);
    let published = published_jobs(&miner.lines());
    assert_eq!(published.len() as u64, JOBS);
    assert_eq!(
        tally(completed.iter().map(|(job, _)| job)),
        tally(&published),
        "every published job is completed, once"
    );
    assert!(operations(&survivor, "*") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_factory_that_panics_on_a_zero_divisor_has_that_job_dead_lettered_and_the_rest_complete(
) {
    /// The deliveries the broker allows a job whose calls fail.
    const DELIVERIES: u32 = 3;
    /// Restarts allowed in all: one per delivery of the poisoned job, and some to spare, so
    /// that a broker that never gives up on it fails the test instead of looping.
    const MAX_RESTARTS: usize = 10;
    const JOBS: usize = 100;
    let deliveries = DELIVERIES.to_string();
    let broker = Broker::start(&["--max-deliveries", &deliveries]).await;
    let flags = ["-panic-on-zero", "-no-pipeline"];
    let ports = [free_port(), free_port()];
    let mut factories = Vec::new();
    for port in ports {
        factories.push(go_factory(&broker, port, &flags).await);
    }

    let mut poison = Process::start(
        "miner",
        &[
            "--broker",
            &broker.address,
            "--topic",
            "divide",
            "--job",
            "5,0",
        ],
    );
    let count = JOBS.to_string();
    let mut miner = go_miner(
        &broker,
        &[
            "-topic",
            "divide",
            "-count",
            &count,
            "-interval",
            "0",
            "-seed",
            "4",
        ],
    );

    // The supervisor, as a student would run the factories: each dead one is started again
    // on its port, and subscribes again.
    let dead_letter = |lines: Vec<String>| {
        lines
            .into_iter()
            .find(|line| line.contains(" of 5 and 0 ") && line.contains("delivered "))
    };
    let mut restarts = 0;
    let deadline = Instant::now() + WAIT;
    while !(dead_letter(broker.process.lines()).is_some()
        && broker.results(DIVIDE).len() == JOBS
        && miner.has_exited().is_some())
    {
        for (factory, port) in factories.iter_mut().zip(ports) {
            if let Some(status) = factory.has_exited() {
                assert_eq!(
                    status.code(),
                    Some(2),
                    "a Go factory died other than by a panic: {}",
                    factory.last_errors(10)
                );
                // Its standard error is read by a thread of its own, maybe not to the end yet.
                eventually(
                    "the dead Go factory's panic is about a zero divisor",
                    || {
                        factory
                            .last_errors(usize::MAX)
                            .contains("integer divide by zero")
                    },
                )
                .await;
                restarts += 1;
                assert!(
                    restarts <= MAX_RESTARTS,
                    "the Go factories died {restarts} times"
                );
                *factory = start_go_factory(&broker, port, &flags);
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?}: {} of {JOBS} jobs completed, dead-lettered: {}, restarts: {restarts}",
            broker.results(DIVIDE).len(),
            dead_letter(broker.process.lines()).is_some(),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    assert!(poison.exit_status().await.success());
    let line = dead_letter(broker.process.lines()).expect("seen above");
    assert!(
        line.contains(&format!("delivered {DELIVERIES} times")),
        "{line}"
    );
    // The broker may see the last death a moment before the process can be reaped.
    let deaths = |factories: &mut Vec<Process>| {
        restarts + factories.iter_mut().filter_map(|f| f.has_exited()).count()
    };
    lab::wait_until(REAPING, async || {
        deaths(&mut factories) == DELIVERIES as usize
    })
    .await;
    assert_eq!(
        deaths(&mut factories),
        DELIVERIES as usize,
        "each delivery of 5 / 0 brought one factory down, and no other job did"
    );
    assert_eq!(finished(&mut miner).await, JOBS as u64);
    let completed = broker.results(DIVIDE);
    checked_quotients(&completed, 2);
    assert_eq!(
        tally(completed.iter().map(|(job, _)| job)),
        tally(&published_jobs(&miner.lines())),
        "every other job is completed, once"
    );
    let divide = broker.topic("divide").await.expect("the topic exists");
    assert_eq!((divide.ready, divide.in_flight, divide.dead), (0, 0, 1));
}

#[tokio::test]
async fn a_go_factorys_pipeline_feeds_divide() {
    let broker = Broker::start(&[]).await;
    let _factory = go_factory(&broker, free_port(), &[]).await;

    // Only a multiply miner: the divide jobs come from the factory's pipeline.
    let mut miner = go_miner(&broker, &["-count", "20", "-interval", "0", "-seed", "5"]);
    assert_eq!(finished(&mut miner).await, 20);
    broker.settles("multiply", 20).await;
    broker.settles("divide", 10).await;

    let products = checked_products(&broker.results(MULTIPLY), 2);
    let operands = checked_quotients(&broker.results(DIVIDE), 2);
    assert_each_result_used_once(&products, &operands);
}

#[tokio::test]
async fn go_triplets_work_end_to_end() {
    let broker = Broker::start(&[]).await;
    let factory = go_factory(&broker, free_port(), &["-triplets"]).await;

    let mut miner = go_miner(
        &broker,
        &["-triplets", "-count", "30", "-interval", "0", "-seed", "3"],
    );
    assert_eq!(finished(&mut miner).await, 30);
    broker.settles("multiply", 30).await;
    broker.settles("divide", 10).await;

    let completed = broker.results(MULTIPLY);
    let published = published_jobs(&miner.lines());
    assert_eq!(
        tally(completed.iter().map(|(job, _)| job)),
        tally(&published),
        "the broker computed the Triplets the Go miner published"
    );
    let products = checked_products(&completed, 3);
    let operands = checked_quotients(&broker.results(DIVIDE), 3);
    assert_each_result_used_once(&products, &operands);
    assert_eq!(operations(&factory, "*"), 30);
}

#[tokio::test]
async fn go_subscribers_show_in_stats_marked_as_go() {
    let broker = Broker::start(&[]).await;
    let go_port = free_port();
    let _go_factory = go_factory(&broker, go_port, &["-no-pipeline", "-no-divide"]).await;
    let _rust_factory = rust_multiply_factory(&broker);
    broker.subscribers(2).await;

    let stats = {
        let address = broker.address.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(program("broker"))
                .args(["stats", "--broker", &address, "--json"])
                .output()
                .expect("run broker stats")
        })
        .await
        .unwrap()
    };
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&stats.stdout).expect("broker stats --json prints JSON");
    let subscribers = json["subscribers"]
        .as_array()
        .expect("a list of subscribers");
    let go_address = format!("127.0.0.1:{go_port}");
    let (go, rust): (Vec<_>, Vec<_>) = subscribers
        .iter()
        .partition(|s| s["address"] == go_address.as_str());
    assert_eq!((go.len(), rust.len()), (1, 1), "{json:#}");
    assert_eq!(go[0]["protocol"], GO_PROTOCOL, "{json:#}");
    assert_eq!(go[0]["topic"], "multiply");
    assert_eq!(go[0]["callback"], MULTIPLY);
    assert_ne!(rust[0]["protocol"], GO_PROTOCOL, "{json:#}");
}

#[tokio::test]
async fn with_a_token_net_rpc_clients_are_refused_with_a_clear_line() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let broker = Process::start(
        "broker",
        &[
            "--port",
            &port.to_string(),
            "--http",
            "off",
            "--token",
            "s3cret",
        ],
    );
    eventually("the broker listens", || {
        std::net::TcpStream::connect(&address).is_ok()
    })
    .await;

    let mut miner = start_go("miner", &["-broker", &address, "-count", "1"]);
    let status = miner.exit_status().await;
    assert_eq!(status.code(), Some(1), "the Go miner is refused");
    assert_eq!(published_jobs(&miner.lines()).len(), 0);
    // net/rpc has no way to carry a token, so the broker must say why it refused.
    let explains = |line: &str| {
        let line = line.to_lowercase();
        line.contains("net/rpc") && line.contains("token")
    };
    eventually("the broker says why it refused the Go miner", || {
        broker.last_errors(usize::MAX).lines().any(explains)
    })
    .await;
}

#[tokio::test]
async fn a_go_publish_to_a_full_topic_waits_for_room() {
    let broker = Broker::start(&[]).await;
    let created = broker
        .client
        .create_channel(
            tarpc::context::current(),
            ChannelRequest {
                topic: "multiply".into(),
                buffer: 1,
            },
        )
        .await
        .expect("the broker answers");
    created.expect("the topic is created");

    // The Go miner's CreateChannel (buffer 10) finds the topic and leaves its buffer of 1.
    let mut miner = go_miner(&broker, &["-count", "2", "-interval", "0"]);
    eventually_async("the first job fills the topic", async || {
        published_jobs(&miner.lines()).len() == 1
            && broker.topic("multiply").await.is_some_and(|t| t.ready == 1)
    })
    .await;
    let held_until = Instant::now() + HOLD;
    while Instant::now() < held_until {
        assert_eq!(
            published_jobs(&miner.lines()).len(),
            1,
            "the second publish was answered"
        );
        assert!(
            miner.has_exited().is_none(),
            "the miner exited while its publish should wait: {}",
            miner.last_errors(5)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let _factory = go_factory(&broker, free_port(), &["-no-pipeline", "-no-divide"]).await;
    assert_eq!(finished(&mut miner).await, 2);
    broker.settles("multiply", 2).await;
    checked_products(&broker.results(MULTIPLY), 2);
}

/// Our own factory as a process, on `multiply` alone, without the pipeline.
fn rust_multiply_factory(broker: &Broker) -> Process {
    Process::start(
        "factory",
        &[
            "--broker",
            &broker.address,
            "--port",
            "0",
            "--topics",
            "multiply",
            "--no-pipeline",
        ],
    )
}
