//! Access control and hostile bytes on the broker's port: the broker stays up and keeps
//! serving its real clients.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::Settings;
use factory::cli::LabTopic::Multiply;
use stubs::{ChannelRequest, Pair};
use system_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use transport::handshake::{self, HandshakeError, MAGIC, NOT_PAIRBROKER, WRONG_TOKEN};
use transport::{AccessToken, Admission, ConnectError};

const TOKEN: &str = "correct horse battery staple";

fn with_token() -> Settings {
    Settings {
        admission: Admission {
            token: AccessToken::new(TOKEN).unwrap(),
            ..Admission::default()
        },
        ..Settings::default()
    }
}

async fn connect_with(
    address: SocketAddr,
    token: AccessToken,
) -> Result<stubs::BrokerClient, ConnectError> {
    transport::connect_broker(&address.to_string(), Duration::from_secs(3), &token, None).await
}

/// Reads until the server closes the connection; fails the test if it does not within [`WAIT`].
async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .ok();
    received
}

/// The broker still does its job for a well-behaved client.
async fn still_serves(address: SocketAddr, token: AccessToken) {
    let client = connect_with(address, token)
        .await
        .expect("a good client still connects");
    create_topic(&client, "still-here", 100_000).await;
    publish(&client, "still-here", Pair { x: 1, y: 2 }).await;
}

#[tokio::test]
async fn without_the_token_nothing_is_served_and_with_it_everything_is() {
    let (broker, _) = start_broker(with_token()).await;
    for token in [AccessToken::none(), AccessToken::new("guess").unwrap()] {
        let refused = connect_with(broker.address, token).await;
        assert!(
            matches!(
                refused,
                Err(ConnectError::Handshake {
                    source: HandshakeError::WrongToken,
                    ..
                })
            ),
            "{:?}",
            refused.map(|_| ())
        );
    }
    still_serves(broker.address, AccessToken::new(TOKEN).unwrap()).await;

    // A miner and a factory without the token get a clear error at start.
    let miner = miner::run(
        lab::miner_config(broker.address, "multiply"),
        lab_console::Console::quiet(),
        Default::default(),
    )
    .await;
    let error = miner.expect_err("the miner has no token").to_string();
    assert!(error.contains("access token was refused"), "{error}");
    let factory = lab::RunningFactory::start(
        0,
        factory_config(broker.address, &[Multiply], false),
        lab_console::Console::quiet(),
    )
    .await
    .unwrap();
    let error = factory
        .stop()
        .await
        .expect_err("the factory has no token")
        .to_string();
    assert!(error.contains("access token was refused"), "{error}");

    // With the token, the lab works.
    let mut config = factory_config(broker.address, &[Multiply], false);
    config.link.token = AccessToken::new(TOKEN).unwrap();
    let _factory = start_factory(&broker, 0, config).await;
}

#[tokio::test]
async fn the_broker_never_dials_a_subscriber_before_the_connection_is_authenticated() {
    let (broker, _) = start_broker(with_token()).await;
    let bait = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut stream = TcpStream::connect(broker.address).await.unwrap();
    // A handshake with the wrong token, and right behind it a subscribe for the bait address.
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&5u16.to_be_bytes());
    hello.extend_from_slice(b"guess");
    hello.extend_from_slice(&[0, 0, 0, 40]);
    hello.extend_from_slice(format!("subscribe {}", bait.local_addr().unwrap()).as_bytes());
    stream.write_all(&hello).await.unwrap();
    let received = closed_by_server(&mut stream).await;
    assert_eq!(received, vec![WRONG_TOKEN], "refused, then closed");
    // The connection is closed without a request having been read: nothing dialled the bait.
    let dialled = tokio::time::timeout(Duration::from_millis(200), bait.accept()).await;
    assert!(dialled.is_err(), "the broker dialled the bait address");
    assert!(broker.broker.subscriptions().is_empty());
}

#[tokio::test]
async fn random_bytes_a_4_gib_frame_header_and_a_frame_of_the_wrong_type_are_shut_out() {
    let (broker, _) = start_broker(Settings::default()).await;

    // Not a pairbroker handshake at all: tried as Go's net/rpc, which cannot read it either,
    // and closed without an answer.
    let mut random = TcpStream::connect(broker.address).await.unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = random.write_all(&noise).await;
    assert_eq!(closed_by_server(&mut random).await, Vec::<u8>::new());
    // A factory speaks pairbroker alone: it says so, and closes.
    let factory = lab_factory(&broker, &[Multiply], false).await;
    let mut random = TcpStream::connect(factory.address).await.unwrap();
    let _ = random.write_all(&noise).await;
    assert_eq!(closed_by_server(&mut random).await, vec![NOT_PAIRBROKER]);

    // A good handshake, then a frame header that announces 4 GiB.
    let mut huge = TcpStream::connect(broker.address).await.unwrap();
    handshake::offer(&mut huge, &AccessToken::none())
        .await
        .unwrap();
    huge.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    huge.write_all(&[0; 1024]).await.unwrap();
    assert!(
        closed_by_server(&mut huge).await.is_empty(),
        "closed without an answer"
    );

    // A good handshake, then a well-formed frame that holds no request.
    let mut wrong = TcpStream::connect(broker.address).await.unwrap();
    handshake::offer(&mut wrong, &AccessToken::none())
        .await
        .unwrap();
    let body = [0xff_u8; 32];
    wrong
        .write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    wrong.write_all(&body).await.unwrap();
    assert!(
        closed_by_server(&mut wrong).await.is_empty(),
        "closed without an answer"
    );

    still_serves(broker.address, AccessToken::none()).await;
}

/// How many connections the attacker holds that never send a byte.
const SILENT: usize = 2_000;
/// How many connections the attacker holds that send half of the handshake's magic and stop.
const HALF_SENT: usize = 300;
/// The jobs a real miner publishes and a real factory completes, with and without the attacker.
const JOBS: usize = 1_000;
/// The publishes whose round trips a probing client times, with and without the attacker.
const PROBES: usize = 500;
/// The most the broker's RSS may reach under the attack. An idle broker takes about 10 MiB
/// (a debug build a little more); what the attacker can make it hold is bounded by the
/// handshaking limits (256 connections from one address, each a task and a socket of a few
/// KiB), so the bound leaves room for the allocator, not for connections.
const MAX_RSS_UNDER_ATTACK_KIB: u64 = 64 * 1024;
/// The broker's completion lines: `Factory.Multiply of 12 and 34 is 408`.
const COMPLETED: &str = "Factory.Multiply of ";

/// Raises this process's open-file limit to at least `needed`, within the hard limit, for
/// thousands of sockets; the programs it starts inherit it.
fn raise_open_file_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < needed {
            limit.rlim_cur = needed.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= needed,
        "this test needs {needed} open files; the hard limit is {}",
        limit.rlim_max
    );
}

/// The broker program on a free loopback port, with its process id to read its memory by.
struct BrokerProcess {
    process: Process,
    pid: u32,
    address: SocketAddr,
}

impl BrokerProcess {
    async fn start(args: &[&str]) -> Self {
        let port = free_port();
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        // The shell prints its process id, then becomes the broker, keeping the id.
        let mut command = std::process::Command::new("sh");
        command
            .args(["-c", "echo \"pid $$\"; exec \"$0\" \"$@\""])
            .arg(program("broker"))
            .args(["--port", &port.to_string(), "--http", "off"])
            .args(args);
        let mut process = Process::spawn(command);
        process.client_when_up(address).await;
        eventually("the broker's process id is read", || {
            !process.lines().is_empty()
        })
        .await;
        let pid = process.lines()[0]
            .strip_prefix("pid ")
            .and_then(|pid| pid.parse().ok())
            .expect("the broker's first line is its process id");
        Self {
            process,
            pid,
            address,
        }
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.pid)
    }
}

/// The resident memory (VmRSS) of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the broker's /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rss| rss.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// Connections from 127.0.0.1, the clients' own address, that hold the broker's resources and
/// do no work; each one the broker closes is opened again after a pause. The attacker runs on a
/// runtime of its own, as another program would, so that it delays the clients' tasks no more
/// than it delays the broker's.
struct Attacker {
    opened: Arc<AtomicUsize>,
    closed_by_broker: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Attacker {
    /// How long the attacker waits before opening again a connection the broker closed. Short
    /// enough to keep the broker's handshaking places full all the time; long enough that the
    /// attacker, on the same two cores as the broker and the clients, is not merely a CPU hog.
    const REOPEN_PAUSE: Duration = Duration::from_millis(250);

    fn start(broker: SocketAddr) -> Self {
        let opened = Arc::new(AtomicUsize::new(0));
        let closed_by_broker = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the attacker's runtime");
        let magic = &MAGIC[..MAGIC.len() / 2];
        for n in 0..SILENT + HALF_SENT {
            let hello: &'static [u8] = if n < SILENT { &[] } else { magic };
            let (opened, closed_by_broker) = (opened.clone(), closed_by_broker.clone());
            runtime.spawn(async move {
                loop {
                    if let Ok(mut stream) = TcpStream::connect(broker).await {
                        opened.fetch_add(1, Ordering::Relaxed);
                        if stream.write_all(hello).await.is_ok() {
                            let mut buffer = [0; 16];
                            while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {}
                        }
                        closed_by_broker.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Self::REOPEN_PAUSE).await;
                }
            });
        }
        Self {
            opened,
            closed_by_broker,
            runtime: Some(runtime),
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What a run of real clients measured.
struct Run {
    /// How long a new client took to connect, handshake included.
    connect: Duration,
    /// The probing client's publish round trips, shortest first.
    publishes: Vec<Duration>,
    /// From the start of a factory and a miner to the broker's last completion of their jobs.
    jobs: Duration,
}

impl Run {
    fn percentile(&self, percent: usize) -> Duration {
        self.publishes[(self.publishes.len() * percent / 100).min(self.publishes.len() - 1)]
    }

    fn describe(&self) -> String {
        format!(
            "connect {:?}, publish p50 {:?} p99 {:?}, {JOBS} jobs in {:?}",
            self.connect,
            self.percentile(50),
            self.percentile(99),
            self.jobs
        )
    }
}

/// A new client connects and times its publishes; then a new factory and a new miner, both
/// processes, publish and complete [`JOBS`] jobs, every one of them checked.
async fn run_clients(broker: &BrokerProcess) -> Run {
    let address = broker.address.to_string();
    let started = Instant::now();
    let probe =
        transport::connect_broker(&address, Duration::from_secs(3), &AccessToken::none(), None)
            .await
            .expect("a new client connects");
    let connect = started.elapsed();
    create_topic(&probe, "probe", 100_000).await;
    let mut publishes = Vec::with_capacity(PROBES);
    for x in 0..PROBES as i64 {
        let sent = Instant::now();
        publish(&probe, "probe", Pair { x, y: 1 }).await;
        publishes.push(sent.elapsed());
    }
    publishes.sort();

    let completed_before = broker.process.count_lines(COMPLETED);
    let started = Instant::now();
    let _factory = factory_process(&address, 0, "multiply", &["--no-pipeline"]);
    let count = JOBS.to_string();
    let mut miner = Process::start(
        "miner",
        &[
            "--broker",
            &address,
            "--topic",
            "multiply",
            "--count",
            &count,
            "--interval",
            "0s",
        ],
    );
    let status = miner.exit_status().await;
    assert!(status.success(), "{status}: {}", miner.last_errors(10));
    eventually("the miner's lines are read", || {
        miner.count_lines("published ") == JOBS
    })
    .await;
    eventually("the broker completes every job", || {
        broker.process.count_lines(COMPLETED) == completed_before + JOBS
    })
    .await;
    Run {
        connect,
        publishes,
        jobs: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_and_three_hundred_half_handshakes_from_the_clients_own_address_lock_nobody_out(
) {
    raise_open_file_limit(8_192);
    // Built before anything is timed.
    program("factory");
    program("miner");
    let broker = BrokerProcess::start(&[]).await;
    let quiet = run_clients(&broker).await;
    let idle_rss = broker.rss_kib();

    // The attacker is on 127.0.0.1 too: its connections and the real clients' share one
    // address, as on a lab machine or behind a NAT.
    let attacker = Attacker::start(broker.address);
    eventually("the attacker has opened every connection", || {
        attacker.opened.load(Ordering::Relaxed) >= SILENT + HALF_SENT
    })
    .await;
    // The broker's memory is sampled all through the run under attack.
    let highest_rss = Arc::new(AtomicU64::new(broker.rss_kib()));
    let sampler = tokio::spawn({
        let (highest_rss, pid) = (highest_rss.clone(), broker.pid);
        async move {
            loop {
                highest_rss.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let closed_before = attacker.closed_by_broker.load(Ordering::Relaxed);
    let attack_started = Instant::now();
    let attacked = run_clients(&broker).await;
    let attack_rate = (attacker.closed_by_broker.load(Ordering::Relaxed) - closed_before) as f64
        / attack_started.elapsed().as_secs_f64();
    sampler.abort();
    let highest_rss = highest_rss.load(Ordering::Relaxed).max(broker.rss_kib());
    let closed = attacker.closed_by_broker.load(Ordering::Relaxed);
    drop(attacker);

    eprintln!("without the attacker: {}", quiet.describe());
    eprintln!(
        "with {SILENT} silent and {HALF_SENT} half-sent connections ({closed} closed by the \
         broker, {attack_rate:.0} a second while the clients ran): {}",
        attacked.describe()
    );
    eprintln!("broker RSS: {idle_rss} KiB idle, at most {highest_rss} KiB under the attacker");
    assert!(
        highest_rss < MAX_RSS_UNDER_ATTACK_KIB,
        "the broker took {highest_rss} KiB under the attacker"
    );
    // Generous: on a busy machine a round trip may take a while, but not seconds.
    assert!(
        attacked.percentile(99) < Duration::from_secs(1),
        "{}",
        attacked.describe()
    );
    still_serves(broker.address, AccessToken::none()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_client_is_told_why_while_those_within_are_served() {
    raise_open_file_limit(4_096);
    const LIMIT: usize = 50;
    let broker = BrokerProcess::start(&["--max-connections", &LIMIT.to_string()]).await;
    let address = broker.address;
    let served = client(address).await;
    // Silent and half-sent connections, more than the limit, take no established place.
    let mut handshaking = Vec::new();
    for n in 0..2 * LIMIT {
        let mut stream = TcpStream::connect(address).await.unwrap();
        if n % 2 == 1 {
            stream.write_all(&MAGIC[..3]).await.unwrap();
        }
        handshaking.push(stream);
    }
    let mut established = Vec::new();
    for _ in 1..LIMIT {
        let mut stream = TcpStream::connect(address).await.unwrap();
        handshake::offer(&mut stream, &AccessToken::none())
            .await
            .expect("within the limit, a client is served");
        established.push(stream);
    }
    // One more is refused in the handshake, told why; our clients print it.
    let refused = connect_with(address, AccessToken::none()).await;
    let error = match refused {
        Err(
            error @ ConnectError::Handshake {
                source: HandshakeError::TooManyConnections,
                ..
            },
        ) => error.to_string(),
        other => panic!("{:?}", other.map(|_| ())),
    };
    assert!(
        error.contains("holds as many connections as it allows"),
        "{error}"
    );
    let mut miner = std::process::Command::new(program("miner"));
    miner.args(["--broker", &address.to_string(), "--count", "1"]);
    let said = failed_start(miner).await;
    assert!(
        said.contains("holds as many connections as it allows"),
        "{said}"
    );
    // The client within the limit is served all along.
    create_topic(&served, "within", 1_000).await;
    for x in 0..100 {
        publish(&served, "within", Pair { x, y: 1 }).await;
    }
    // A place given back is a place for the next client.
    drop(established.pop());
    eventually_async("a closed connection makes room", async || {
        connect_with(address, AccessToken::none()).await.is_ok()
    })
    .await;
    drop(handshaking);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_replies_does_not_stop_the_others() {
    let (broker, _) = start_broker(Settings::default()).await;
    still_serves(broker.address, AccessToken::none()).await;
    // A real client whose replies are never read: its requests are sent by a task, and
    // nobody awaits the answers.
    let mut deaf = TcpStream::connect(broker.address).await.unwrap();
    handshake::offer(&mut deaf, &AccessToken::none())
        .await
        .unwrap();
    let (mut reader, mut writer) = deaf.into_split();
    let _keep_reader_unread = &mut reader;
    let writer_task = tokio::spawn(async move {
        // Frames of a request the broker cannot decode are closed at once; to make the broker
        // answer, send real requests, serialised as a client would.
        let frame = valid_create_channel_frame();
        for _ in 0..100_000 {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let other = client(broker.address).await;
    for x in 0..50 {
        publish(&other, "still-here", Pair { x, y: 1 }).await;
    }
    writer_task.abort();
}

/// One length-delimited `create_channel` request, bincode-encoded as tarpc's client sends it.
fn valid_create_channel_frame() -> Vec<u8> {
    use tarpc::tokio_serde::Serializer;
    let request = tarpc::ClientMessage::Request(tarpc::Request {
        context: tarpc::context::current(),
        id: 1,
        message: stubs::BrokerRequest::CreateChannel {
            request: ChannelRequest {
                topic: "deaf".into(),
                buffer: 10,
            },
        },
    });
    let mut codec = tarpc::tokio_serde::formats::Bincode::<(), _>::default();
    let body = std::pin::Pin::new(&mut codec).serialize(&request).unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}
