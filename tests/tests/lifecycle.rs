//! Graceful stops: SIGTERM on a factory, a broker and a miner, each a real process.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::{Outcome, Settings};
use factory::cli::LabTopic::Multiply;
use futures::StreamExt;
use stubs::{Factory, Job, JobError, JobReport, Pair};
use system_tests::*;
use tarpc::server::{BaseChannel, Channel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_factory_unsubscribes_finishes_its_calls_flushes_its_pipeline_and_exits_0() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let broker_address = broker.address.to_string();
    let extra = ["--prefetch", "4", "--buffer", "100000"];
    let mut factory = factory_process(&broker_address, 0, "multiply", &extra);
    eventually("the factory subscribes", || {
        broker.broker.subscriptions().len() == 1
    })
    .await;
    let mut miner = lab::miner_config(broker.address, "multiply");
    miner.interval = Duration::ZERO;
    let stop_miner = tokio_util::sync::CancellationToken::new();
    let miner = spawn_miner(miner, stop_miner.clone());

    eventually("the factory completes jobs", || {
        recorder.completed("multiply").len() >= 101
    })
    .await;
    factory.signal("TERM");
    let status = factory.exit_status().await;
    assert!(status.success(), "the factory exits 0: {status:?}");
    assert!(broker.broker.subscriptions().is_empty(), "it unsubscribed");
    let failures: Vec<_> = recorder
        .outcomes()
        .into_iter()
        .filter(|o| matches!(o, Outcome::Requeued { .. }))
        .collect();
    assert!(
        failures.is_empty(),
        "the broker saw no failed call: {failures:?}"
    );
    let multiplied = recorder.completed("multiply").len() as u64;
    let divide = broker.topic_counts("divide").await.unwrap();
    assert_eq!(
        divide.published,
        multiplied / 2,
        "every whole pipeline group was published"
    );
    let multiply = broker.topic_counts("multiply").await.unwrap();
    assert_eq!(multiply.in_flight, 0);

    stop_miner.cancel();
    miner.await.unwrap().expect("the miner stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_broker_exits_0() {
    let port = free_port();
    let mut broker = Process::start("broker", &["--port", &port.to_string(), "--http", "off"]);
    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let held = lab::wait_until(WAIT, async || {
        transport::connect_broker(
            &address.to_string(),
            Duration::from_secs(1),
            &transport::AccessToken::none(),
            None,
        )
        .await
        .is_ok()
    })
    .await;
    assert!(held, "the broker listens");
    let factory = lab::RunningFactory::start(
        0,
        factory_config(address, &[Multiply], false),
        lab_console::Console::quiet(),
    )
    .await
    .unwrap();
    let client = client(address).await;
    let subscription = stubs::Subscription {
        topic: "multiply".into(),
        factory_address: factory.address.to_string(),
        callback: stubs::MULTIPLY.into(),
        prefetch: 1,
    };
    eventually_async("the factory subscribes", async || {
        let held = client
            .is_subscribed(tarpc::context::current(), subscription.clone())
            .await;
        matches!(held, Ok(Ok(true)))
    })
    .await;
    broker.signal("TERM");
    let status = broker.exit_status().await;
    assert!(status.success(), "the broker exits 0: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_miner_finishes_its_publishes_and_exits_0() {
    let (broker, _) = start_broker(Settings::default()).await;
    let broker_address = broker.address.to_string();
    let mut miner = Process::start(
        "miner",
        &[
            "--broker",
            &broker_address,
            "--interval",
            "5ms",
            "--concurrency",
            "4",
            "--buffer",
            "100000",
        ],
    );
    eventually("the miner publishes", || {
        miner.count_lines("published ") >= 50
    })
    .await;
    miner.signal("TERM");
    let status = miner.exit_status().await;
    assert!(status.success(), "the miner exits 0: {status:?}");
    // The process has exited, so every line is written; the reader thread may still be
    // reading the last ones.
    eventually_async(
        "every job the broker took was printed, and no other",
        async || {
            let published = broker.topic_counts("multiply").await.unwrap().published;
            miner.count_lines("published ") as u64 == published
        },
    )
    .await;
}

/// A factory served in this process that holds each call for `hold` before it answers, and
/// keeps the first operand of every job it answered: a factory with calls in flight for as
/// long as the test needs.
#[derive(Clone)]
struct SlowFactory {
    hold: Duration,
    answered: Arc<Mutex<Vec<i64>>>,
}

impl SlowFactory {
    fn new(hold: Duration) -> Self {
        Self {
            hold,
            answered: Default::default(),
        }
    }

    fn answered(&self) -> Vec<i64> {
        self.answered.lock().unwrap().clone()
    }

    async fn answer(&self, jobs: Vec<Job>) -> Vec<Result<JobReport, JobError>> {
        tokio::time::sleep(self.hold).await;
        let mut answered = self.answered.lock().unwrap();
        jobs.into_iter()
            .map(|job| match job {
                Job::Pair(Pair { x, y }) => {
                    answered.push(x);
                    Ok(JobReport { result: x * y })
                }
                Job::Triplet(_) => Err(JobError::Overflow),
            })
            .collect()
    }

    /// Serves this factory on a free loopback port; returns its address.
    async fn serve(self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("a bound address");
        tokio::spawn(transport::accept(
            listener,
            transport::Admission::default(),
            tokio_util::sync::CancellationToken::new(),
            tokio_util::task::TaskTracker::new(),
            move |stream, _| {
                let factory = self.clone();
                async move {
                    BaseChannel::with_defaults(transport::framed(stream))
                        .execute(Factory::serve(factory))
                        .for_each_concurrent(None, |call| call)
                        .await;
                }
            },
        ));
        address
    }
}

impl Factory for SlowFactory {
    async fn multiply(self, _: tarpc::context::Context, job: Job) -> Result<JobReport, JobError> {
        self.answer(vec![job]).await.remove(0)
    }
    async fn divide(self, _: tarpc::context::Context, job: Job) -> Result<JobReport, JobError> {
        self.answer(vec![job]).await.remove(0)
    }
    async fn multiply_batch(
        self,
        _: tarpc::context::Context,
        jobs: Vec<Job>,
    ) -> Vec<Result<JobReport, JobError>> {
        self.answer(jobs).await
    }
    async fn divide_batch(
        self,
        _: tarpc::context::Context,
        jobs: Vec<Job>,
    ) -> Vec<Result<JobReport, JobError>> {
        self.answer(jobs).await
    }
}

/// Subscribes the factory at `factory` to `multiply` through `client`, `prefetch` calls at once.
async fn subscribe(client: &stubs::BrokerClient, factory: SocketAddr, prefetch: u32) {
    let subscription = stubs::Subscription {
        topic: stubs::MULTIPLY_TOPIC.into(),
        factory_address: factory.to_string(),
        callback: stubs::MULTIPLY.into(),
        prefetch,
    };
    client
        .subscribe(tarpc::context::current(), subscription)
        .await
        .expect("the broker answers")
        .expect("the broker takes the subscription");
}

/// The figures the broker at `client` keeps for the subscriber at `address`: jobs in flight.
async fn in_flight_at(client: &stubs::BrokerClient, address: &str) -> u64 {
    let stats = client.stats(tarpc::context::current()).await;
    stats.map_or(0, |stats| {
        stats
            .subscribers
            .iter()
            .filter(|subscriber| subscriber.address == address)
            .map(|subscriber| subscriber.in_flight)
            .sum()
    })
}

/// The first operands of the jobs the broker printed as completed: `Factory.Multiply of X and
/// Y is P`.
fn completed_operands(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix("Factory.Multiply of ")?;
            rest.split_once(" and ")?.0.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_terminated_with_calls_in_flight_refuses_at_once_settles_them_and_exits_0() {
    /// How long the broker gives a factory to answer a call.
    const CALL_TIMEOUT: Duration = Duration::from_secs(3);
    /// How long the slow factory holds each call: well within the call timeout, so its calls
    /// finish during the stop.
    const HOLD: Duration = Duration::from_secs(1);
    /// How soon after SIGTERM new connections must be refused: "at once", with room for a
    /// busy CI machine to schedule the broker.
    const REFUSED_WITHIN: Duration = Duration::from_secs(1);
    /// How long after the last call's deadline the broker may take to put its jobs back and
    /// exit, on a busy machine.
    const EXIT_MARGIN: Duration = Duration::from_secs(2);
    const JOBS: i64 = 40;

    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let port = free_port();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let broker_args = [
        "--port".to_owned(),
        port.to_string(),
        "--http".to_owned(),
        "off".to_owned(),
        "--data-dir".to_owned(),
        data_dir.path().display().to_string(),
        "--call-timeout".to_owned(),
        format!("{}s", CALL_TIMEOUT.as_secs()),
    ];
    let broker_args: Vec<&str> = broker_args.iter().map(String::as_str).collect();
    let mut broker = Process::start("broker", &broker_args);
    let client = broker.client_when_up(address).await;
    let channel = stubs::ChannelRequest {
        topic: stubs::MULTIPLY_TOPIC.into(),
        buffer: 1000,
    };
    client
        .create_channel(tarpc::context::current(), channel)
        .await
        .expect("the broker answers")
        .expect("the broker creates the topic");

    // One factory process, stopped: its calls can only end by their deadline.
    let address_arg = address.to_string();
    let extra = ["--no-pipeline", "--prefetch", "4"];
    let stopped = factory_process(&address_arg, 0, "multiply", &extra);
    let mut stopped_address = String::new();
    eventually_async("the factory process subscribes", async || {
        let stats = client.stats(tarpc::context::current()).await;
        let Some(subscriber) = stats
            .ok()
            .and_then(|stats| stats.subscribers.first().cloned())
        else {
            return false;
        };
        stopped_address = subscriber.address;
        true
    })
    .await;
    stopped.signal("STOP");
    // One factory in this process that answers each call after HOLD.
    let slow = SlowFactory::new(HOLD);
    let slow_address = slow.clone().serve().await;
    subscribe(&client, slow_address, 4).await;

    for x in 0..JOBS {
        publish(&client, stubs::MULTIPLY_TOPIC, Pair { x, y: 7 }).await;
    }
    let slow_name = slow_address.to_string();
    let (mut slow_held, mut stopped_held) = (0, 0);
    eventually_async("both factories hold calls in flight", async || {
        slow_held = in_flight_at(&client, &slow_name).await;
        stopped_held = in_flight_at(&client, &stopped_address).await;
        slow_held > 0 && stopped_held > 0
    })
    .await;

    broker.signal("TERM");
    let terminated = Instant::now();
    // New connections are refused at once; the stop does not wait for the calls to end first.
    let refused = lab::wait_until(REFUSED_WITHIN, async || {
        tokio::net::TcpStream::connect(address)
            .await
            .is_err_and(|error| error.kind() == std::io::ErrorKind::ConnectionRefused)
    })
    .await;
    let refused_after = terminated.elapsed();
    assert!(
        refused,
        "the terminated broker still accepts connections after {REFUSED_WITHIN:?}"
    );
    let status = broker.exit_status().await;
    let exited_after = terminated.elapsed();
    assert!(status.success(), "the broker exits 0: {status:?}");
    assert!(
        exited_after <= CALL_TIMEOUT + EXIT_MARGIN,
        "the broker exits within the call timeout ({CALL_TIMEOUT:?}) and {EXIT_MARGIN:?}, not \
         after {exited_after:?}"
    );
    // The calls the slow factory held finished, and the broker settled their jobs.
    let answered = slow.answered();
    assert!(
        answered.len() as u64 >= slow_held,
        "the slow factory answered the {slow_held} jobs it held: {answered:?}"
    );
    let mut completed = Vec::new();
    eventually("the broker printed every job it completed", || {
        completed = completed_operands(&broker.lines());
        completed.len() >= answered.len()
    })
    .await;
    let completed: BTreeSet<i64> = completed.into_iter().collect();
    assert_eq!(
        completed,
        answered.iter().copied().collect(),
        "the broker completed exactly the jobs the slow factory answered"
    );
    // The stopped factory's calls passed their deadline, and their jobs went back.
    let logged = broker.last_errors(50);
    assert!(
        logged.contains("no reply within"),
        "the broker logs the stopped factory's calls that passed their deadline:\n{logged}"
    );
    stopped.kill();

    // Started again on its data dir, the broker holds every job it did not complete.
    let mut again = Process::start("broker", &broker_args);
    let client = again.client_when_up(address).await;
    let topics = client
        .stats(tarpc::context::current())
        .await
        .expect("the broker answers")
        .topics;
    let topic = topics
        .iter()
        .find(|topic| topic.name == stubs::MULTIPLY_TOPIC)
        .expect("the topic is kept on disk");
    let ready = topic.ready;
    assert_eq!(topic.in_flight, 0);
    assert!(
        ready >= stopped_held,
        "the {stopped_held} jobs the stopped factory held are ready again, among {ready}"
    );
    let drain = SlowFactory::new(Duration::ZERO);
    let drain_address = drain.clone().serve().await;
    subscribe(&client, drain_address, 4).await;
    eventually("the restarted broker delivers every ready job", || {
        drain.answered().len() as u64 >= ready
    })
    .await;
    let redelivered: BTreeSet<i64> = drain.answered().into_iter().collect();
    let duplicates = completed.intersection(&redelivered).count();
    let every: BTreeSet<i64> = completed.union(&redelivered).copied().collect();
    eprintln!(
        "{JOBS} jobs; at SIGTERM {slow_held} in flight on the slow factory and {stopped_held} on \
         the stopped one; refused after {refused_after:.1?}, exited 0 after \
         {exited_after:.1?}; {} completed during the stop, {ready} ready after the restart, \
         {duplicates} duplicates",
        completed.len()
    );
    assert_eq!(every, (0..JOBS).collect(), "no job is lost");
    assert_eq!(duplicates, 0, "no completed job is delivered again");
    assert_eq!(completed.len() as u64 + ready, JOBS as u64);
    again.signal("TERM");
    assert!(again.exit_status().await.success());
}
