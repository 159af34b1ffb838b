//! What the system tests share: a broker that records every outcome, clients, factories in
//! this process or as real processes, and waiting on a condition with a deadline.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use broker::queue::JobId;
use broker::{Observer, Outcome, Settings};
use factory::cli::LabTopic;
use factory::FactoryConfig;
use lab::{RunningBroker, RunningFactory};
use lab_console::Console;
use stubs::{BrokerClient, BrokerError, Callback, Job, PublishRequest};

mod accounting;
pub mod go;
mod helpers;
pub use accounting::*;
pub use helpers::*;
pub use nats_harness::{NatsCluster, NatsServer};

/// How long a test waits for a condition before it fails. Generous, because CI's two cores may
/// be busy compiling; a passing test returns as soon as the condition holds.
pub const WAIT: Duration = Duration::from_secs(30);

/// Every outcome a broker reports, in order.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Outcome>>>);

/// A completed job as the broker reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The job's identifier.
    pub job_id: JobId,
    /// The procedure called.
    pub callback: Callback,
    /// The job.
    pub job: Job,
    /// The value computed.
    pub result: i64,
    /// The factory that computed it.
    pub factory: String,
}

impl Recorder {
    /// An observer that records into this recorder.
    pub fn observer(&self) -> Observer {
        let outcomes = self.0.clone();
        Arc::new(move |outcome| outcomes.lock().unwrap().push(outcome.clone()))
    }

    /// Every outcome so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.0.lock().unwrap().clone()
    }

    /// Every completion so far, on topic `topic`.
    pub fn completed(&self, topic: &str) -> Vec<Completion> {
        self.outcomes()
            .into_iter()
            .filter_map(|outcome| match outcome {
                Outcome::Completed {
                    topic: t,
                    job_id,
                    callback,
                    job,
                    result,
                    factory,
                } if &*t == topic => Some(Completion {
                    job_id,
                    callback,
                    job,
                    result,
                    factory: factory.to_string(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The values computed on `topic`, in the order the broker reported them.
    pub fn results(&self, topic: &str) -> Vec<i64> {
        self.completed(topic).iter().map(|c| c.result).collect()
    }

    /// The distinct jobs completed on `topic`.
    pub fn completed_ids(&self, topic: &str) -> HashSet<JobId> {
        self.completed(topic).iter().map(|c| c.job_id).collect()
    }
}

/// Checks that the operands of the divide jobs made by the pipeline are the multiply results,
/// every one used, and each exactly once.
pub fn assert_each_result_used_once(results: &[i64], operands: &[i64]) {
    assert_eq!(
        results.len(),
        operands.len(),
        "every multiply result is used"
    );
    let mut unused: HashMap<i64, usize> = HashMap::new();
    for result in results {
        *unused.entry(*result).or_default() += 1;
    }
    for operand in operands {
        let count = unused
            .get_mut(operand)
            .unwrap_or_else(|| panic!("divide operand {operand} is no multiply result"));
        assert!(*count > 0, "multiply result {operand} used twice");
        *count -= 1;
    }
}

/// A plain HTTP/1.1 GET of `path`; fails the test unless the answer is 200. Returns the body.
pub async fn http_get(address: SocketAddr, path: &str) -> String {
    try_http_get(address, path)
        .await
        .unwrap_or_else(|error| panic!("GET {path} from {address}: {error}"))
}

/// A plain HTTP/1.1 GET of `path`: the body of a 200 answer, or what went wrong.
pub async fn try_http_get(address: SocketAddr, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|error| error.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| error.to_string())?;
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .map_err(|_| format!("no answer within {WAIT:?}"))?
        .map_err(|error| error.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP: {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.to_owned());
    }
    Ok(body.to_owned())
}

/// Starts a broker on a free loopback port that records its outcomes.
pub async fn start_broker(settings: Settings) -> (RunningBroker, Recorder) {
    let recorder = Recorder::default();
    let broker = RunningBroker::start(0, settings, recorder.observer())
        .await
        .expect("bind a loopback port");
    (broker, recorder)
}

/// [`start_broker`], with its HTTP side (dashboard, `/metrics`, JSON API) served as the broker
/// program serves it, on a free loopback port: the broker, its recorder and the HTTP address.
pub async fn start_broker_with_http(settings: Settings) -> (RunningBroker, Recorder, SocketAddr) {
    let recorder = Recorder::default();
    let config = broker::Config {
        settings,
        store: broker::StoreConfig::default(),
        observer: recorder.observer(),
        watcher: None,
    };
    let broker = RunningBroker::start_with(0, config, true)
        .await
        .expect("start a broker on loopback");
    let http = broker.http.expect("the broker serves HTTP");
    (broker, recorder, http)
}

/// A client of the broker at `address`.
pub async fn client(address: SocketAddr) -> BrokerClient {
    transport::connect_broker(
        &address.to_string(),
        transport::DEFAULT_CONNECT_TIMEOUT,
        &transport::AccessToken::none(),
        None,
    )
    .await
    .expect("connect to the test broker")
}

/// Publishes `job` to `topic`: the job's identifier, or the broker's refusal. Fails the test if
/// the broker does not answer.
pub async fn try_publish(
    client: &BrokerClient,
    topic: &str,
    job: impl Into<Job>,
) -> Result<JobId, BrokerError> {
    let request = PublishRequest {
        topic: topic.to_owned(),
        job: job.into(),
    };
    client
        .publish(tarpc::context::current(), request)
        .await
        .expect("the broker answers")
        .map(|published| published.job_id)
}

/// Publishes `job` to `topic` and returns its identifier, failing the test on any error.
pub async fn publish(client: &BrokerClient, topic: &str, job: impl Into<Job>) -> JobId {
    try_publish(client, topic, job)
        .await
        .expect("the broker accepts the job")
}

/// A factory configuration for tests: the given topics, quiet, with or without the pipeline.
pub fn factory_config(broker: SocketAddr, topics: &[LabTopic], pipeline: bool) -> FactoryConfig {
    FactoryConfig {
        topics: topics.to_vec(),
        ..lab::factory_config(broker, pipeline)
    }
}

/// Starts a quiet factory in this process on `port` (0 for a free one) and waits until the
/// broker lists its subscriptions.
pub async fn start_factory(
    broker: &RunningBroker,
    port: u16,
    config: FactoryConfig,
) -> RunningFactory {
    let expected = config.topics.len();
    let factory = RunningFactory::start(port, config, Console::quiet())
        .await
        .expect("bind a loopback port");
    let address = factory.address;
    eventually("the factory subscribes", || {
        subscriptions_of(broker, address) == expected
    })
    .await;
    factory
}

/// How many subscriptions the broker holds for the factory at `address`.
pub fn subscriptions_of(broker: &RunningBroker, address: SocketAddr) -> usize {
    broker
        .broker
        .subscriptions()
        .iter()
        .filter(|key| key.factory == address)
        .count()
}

/// Waits until `condition` holds, failing the test with `what` if [`WAIT`] passes first.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let held = lab::wait_until(WAIT, async || condition()).await;
    assert!(held, "timed out after {WAIT:?} waiting until {what}");
}

/// Waits until the asynchronous `condition` holds, failing the test with `what` if [`WAIT`]
/// passes first.
pub async fn eventually_async(what: &str, condition: impl AsyncFnMut() -> bool) {
    let held = lab::wait_until(WAIT, condition).await;
    assert!(held, "timed out after {WAIT:?} waiting until {what}");
}

/// A client of the broker at `address`, once it listens.
pub async fn client_when_up(address: std::net::SocketAddr) -> BrokerClient {
    client_within(address, WAIT)
        .await
        .unwrap_or_else(|error| panic!("the broker did not listen: {error}"))
}

/// A client of the broker at `address`, if it listens within `limit`.
async fn client_within(
    address: std::net::SocketAddr,
    limit: Duration,
) -> Result<BrokerClient, transport::ConnectError> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match transport::connect_broker(
            &address.to_string(),
            Duration::from_secs(1),
            &transport::AccessToken::none(),
            None,
        )
        .await
        {
            Ok(client) => return Ok(client),
            Err(error) if std::time::Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The program `name` of this workspace (`broker`, `factory`, `miner`), built once per test
/// process with the same profile as the tests.
pub fn program(name: &str) -> PathBuf {
    program_of(name, name)
}

/// The program `name` of package `package` (`program_of("system-tests", "bad-factory")` for
/// the tests' own), built as [`program`] builds.
pub fn program_of(package: &str, name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    // Tests run from <target>/<profile>/deps/; the programs live in <target>/<profile>/.
    let test_exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from <target>/<profile>/deps")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", package, "--bin", name]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build -p {package} --bin {name} failed"
    );
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    built.insert(name.to_owned(), path.clone());
    path
}

/// Our factory as a process, on `topic` alone and without its pipeline, once the broker at
/// `address` (which `client` talks to) lists its subscription there.
pub async fn factory_process_on(client: &BrokerClient, address: &str, topic: &str) -> Process {
    let factory = Process::start(
        "factory",
        &[
            "--broker",
            address,
            "--port",
            "0",
            "--topics",
            topic,
            "--no-pipeline",
        ],
    );
    eventually_async(&format!("the factory subscribes to {topic}"), async || {
        let stats = client.stats(tarpc::context::current()).await;
        stats.is_ok_and(|stats| stats.subscribers.iter().any(|s| s.topic == topic))
    })
    .await;
    factory
}

/// A free loopback port, for a program that must be started again on the same port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
        .port()
}

pub use nats_harness::free_ports;

/// One of the workspace's programs running as a child process, its standard output kept line
/// by line. It is killed when dropped.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

/// Keeps each line `output` prints in `lines`, as it comes.
fn keep_lines(output: impl std::io::Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
}

impl Process {
    /// Starts program `name` with `args`; its standard error is discarded.
    pub fn start(name: &str, args: &[&str]) -> Self {
        let mut command = Command::new(program(name));
        command.args(args);
        Self::spawn(command)
    }

    /// Starts `command`; its standard error is kept apart, for [`Process::client_when_up`]'s
    /// failure.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("start {command:?}: {error}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        keep_lines(stdout, lines.clone());
        keep_lines(stderr, errors.clone());
        Self {
            child,
            lines,
            errors,
        }
    }

    /// The last `count` lines the program wrote on standard error.
    pub fn last_errors(&self, count: usize) -> String {
        let errors = self.errors.lock().unwrap();
        errors[errors.len().saturating_sub(count)..].join("\n")
    }

    /// A client of this broker at `address`, once it listens; fails the test with what the
    /// broker wrote on standard error if it does not within [`WAIT`].
    pub async fn client_when_up(&mut self, address: std::net::SocketAddr) -> BrokerClient {
        match client_within(address, WAIT).await {
            Ok(client) => client,
            Err(error) => {
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "the broker did not listen at {address} ({error}); exited: {status:?}; its last words:\n{}",
                    self.last_errors(20)
                )
            }
        }
    }

    /// The lines the program has printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many printed lines start with `prefix`.
    pub fn count_lines(&self, prefix: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.starts_with(prefix))
            .count()
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`) with the system's `kill` command.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits until the program exits, failing the test if [`WAIT`] passes first.
    pub async fn exit_status(&mut self) -> ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the program did not exit within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("kill the program");
        self.child.wait().expect("reap the program");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `command` run to its end, which must be a failure within [`WAIT`]: what it wrote on
/// standard error.
pub async fn failed_start(mut command: Command) -> String {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("start {command:?}: {error}"));
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{command:?} kept running; it should have refused to start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .expect("read standard error");
    assert!(!status.success(), "{command:?} succeeded: {stderr}");
    stderr
}

/// Program `name` with `args`, started in a mount namespace of its own (`unshare`, as an
/// unprivileged user may) after `mounts` (shell commands) ran there: a small or read-only
/// filesystem that the rest of the machine never sees.
pub fn with_mounts(mounts: &str, name: &str, args: &[&str]) -> Command {
    let works = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        works,
        "this test needs `unshare` (util-linux) and unprivileged user namespaces, to give a \
         broker a filesystem of its own; this machine refuses them"
    );
    let mut command = Command::new("unshare");
    command
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(format!("{mounts} && exec \"$0\" \"$@\""))
        .arg(program(name))
        .args(args);
    command
}
