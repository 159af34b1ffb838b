//! The broker's Go front door, spoken by net/rpc clients and factories written here in Rust
//! (the `netrpc` crate), where a test needs bytes or timings a Go program cannot be made to
//! produce: hostile bytes, a client that goes away mid-publish, calls held open to count them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker::Settings;
use netrpc::{
    CallError, Client, FieldKind, Limits, Record, ServerReader, ServerWriter, Struct, StructType,
};
use stubs::{ChannelRequest, Pair, Protocol};
use system_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a call of these tests may take.
const CALL: Duration = Duration::from_secs(10);

async fn go_client(broker: SocketAddr) -> Client {
    Client::connect(broker, CALL)
        .await
        .expect("a net/rpc client connects")
}

fn channel_request(topic: &str, buffer: i64) -> Record {
    let ty = StructType::new("ChannelRequest")
        .field("Topic", FieldKind::String)
        .field("Buffer", FieldKind::Int);
    Record::new(&ty)
        .set("Topic", topic)
        .and_then(|record| record.set("Buffer", buffer))
        .unwrap()
}

fn publish_request(topic: &str, x: i64, y: i64) -> Record {
    let pair = StructType::new("Pair")
        .field("X", FieldKind::Int)
        .field("Y", FieldKind::Int);
    let ty = StructType::new("PublishRequest")
        .field("Topic", FieldKind::String)
        .field("Pair", FieldKind::Struct(pair.clone()));
    let pair = Record::new(&pair)
        .set("X", x)
        .and_then(|r| r.set("Y", y))
        .unwrap();
    Record::new(&ty)
        .set("Topic", topic)
        .and_then(|record| record.set("Pair", pair))
        .unwrap()
}

/// `Broker.Publish` of `Pair{n, n}` to multiply, with time to wait for room in the topic.
async fn publish_waiting(client: Client, n: i64) -> Result<Struct, CallError> {
    let request = publish_request("multiply", n, n);
    client.call("Broker.Publish", request, CALL * 6).await
}

fn subscription(topic: &str, address: SocketAddr, callback: &str) -> Record {
    let ty = StructType::new("Subscription")
        .field("Topic", FieldKind::String)
        .field("FactoryAddress", FieldKind::String)
        .field("Callback", FieldKind::String);
    Record::new(&ty)
        .set("Topic", topic)
        .and_then(|record| record.set("FactoryAddress", address.to_string()))
        .and_then(|record| record.set("Callback", callback))
        .unwrap()
}

/// The broker still serves a Go client and a tarpc client after whatever came before.
async fn still_serves(broker: SocketAddr) {
    let go = go_client(broker).await;
    let reply = go
        .call(
            "Broker.CreateChannel",
            channel_request("still-here", 10),
            CALL,
        )
        .await
        .expect("a Go client is still served");
    assert!(reply.string("Message").unwrap().contains("still-here"));
    let rust = client(broker).await;
    publish(&rust, "still-here", Pair { x: 1, y: 2 }).await;
}

/// Reads until the broker closes the connection; fails if it does not within [`WAIT`].
async fn closed_by_broker(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
        .await
        .expect("the broker closes the connection")
        .ok();
}

#[tokio::test]
async fn go_clients_create_publish_and_hear_the_go_labs_words() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let go = go_client(broker.address).await;
    let created = go
        .call(
            "Broker.CreateChannel",
            channel_request("multiply", 10),
            CALL,
        )
        .await
        .unwrap();
    assert_eq!(
        created.string("Message").unwrap(),
        "created topic \"multiply\" with buffer 10"
    );
    let published = go
        .call("Broker.Publish", publish_request("multiply", 12, 34), CALL)
        .await
        .unwrap();
    assert_eq!(published.string("Message").unwrap(), "published as job 0");
    let _factory = lab_factory(&broker, &[factory::cli::LabTopic::Multiply], false).await;
    eventually("the Go client's job is completed", || {
        recorder
            .completed("multiply")
            .iter()
            .any(|done| done.result == 408)
    })
    .await;

    let unknown = go
        .call("Broker.Publish", publish_request("nowhere", 1, 2), CALL)
        .await;
    assert_eq!(
        unknown.unwrap_err(),
        CallError::Remote("No such topic.".into())
    );
    let method = go
        .call("Broker.Nope", channel_request("multiply", 1), CALL)
        .await;
    assert_eq!(
        method.unwrap_err(),
        CallError::Remote("rpc: can't find method Broker.Nope".into())
    );
    let buffer = go
        .call(
            "Broker.CreateChannel",
            channel_request("negative", -1),
            CALL,
        )
        .await;
    let CallError::Remote(reason) = buffer.unwrap_err() else {
        panic!("a negative buffer is the broker's refusal");
    };
    assert!(reason.starts_with("invalid buffer 0"), "{reason}");
    // Refusals leave the connection as it was.
    go.call(
        "Broker.CreateChannel",
        channel_request("multiply", 10),
        CALL,
    )
    .await
    .expect("the connection carries on");
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_an_error_reply_and_the_connection_carries_on() {
    let (broker, _) = start_broker(Settings::default()).await;
    let go = go_client(broker.address).await;
    let ty = StructType::new("ChannelRequest")
        .field("Topic", FieldKind::Int)
        .field("Buffer", FieldKind::Int);
    let wrong = Record::new(&ty)
        .set("Topic", 5i64)
        .and_then(|record| record.set("Buffer", 10i64))
        .unwrap();
    let CallError::Remote(reason) = go
        .call("Broker.CreateChannel", wrong, CALL)
        .await
        .unwrap_err()
    else {
        panic!("a Topic that is a number is refused in a reply");
    };
    assert!(reason.contains("Topic"), "{reason}");
    go.call("Broker.CreateChannel", channel_request("fine", 10), CALL)
        .await
        .expect("the connection carries on");
}

#[tokio::test]
async fn hostile_bytes_on_the_port_are_closed_and_the_broker_keeps_serving() {
    let (broker, _) = start_broker(Settings::default()).await;
    // Random bytes that are not the pairbroker magic: tried as net/rpc, and refused.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for length in [1usize, 7, 64, 4_096] {
        let bytes: Vec<u8> = (0..length)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .map(|byte| if byte == b'P' { 0 } else { byte })
            .collect();
        let mut stream = TcpStream::connect(broker.address).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let _ = stream.shutdown().await;
        closed_by_broker(&mut stream).await;
    }
    // A length prefix of almost 2^64 bytes: refused at once, nothing reserved for it.
    let mut stream = TcpStream::connect(broker.address).await.unwrap();
    stream
        .write_all(&[0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xF0])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    closed_by_broker(&mut stream).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    still_serves(broker.address).await;
}

#[tokio::test]
async fn a_go_publish_to_a_full_topic_waits_and_one_whose_client_left_leaves_no_job() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let rust = client(broker.address).await;
    rust.create_channel(
        tarpc::context::current(),
        ChannelRequest {
            topic: "multiply".into(),
            buffer: 1,
        },
    )
    .await
    .unwrap()
    .unwrap();
    publish(&rust, "multiply", Pair { x: 1, y: 1 }).await;

    // A client that goes away while its publish waits for room.
    let leaving = go_client(broker.address).await;
    let waiting = tokio::spawn(publish_waiting(leaving, 2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "a publish to a full topic waits");
    waiting.abort();
    // A client that stays waits until a factory makes room.
    let staying = go_client(broker.address).await;
    let stays = tokio::spawn(publish_waiting(staying, 3));
    let _factory = lab_factory(&broker, &[factory::cli::LabTopic::Multiply], false).await;
    let published = stays
        .await
        .unwrap()
        .expect("the publish is stored once there is room");
    assert!(published
        .string("Message")
        .unwrap()
        .starts_with("published as job"));
    eventually("both stored jobs completed", || {
        recorder.completed("multiply").len() == 2
    })
    .await;
    let results = recorder.results("multiply");
    assert_eq!(
        results,
        vec![1, 9],
        "the job of the client that left was never stored"
    );
    let stats = broker.topic_counts("multiply").await.unwrap();
    assert_eq!(stats.published, 2);
}

/// A Go-style factory: serves `Factory.Multiply` over net/rpc, holding each call until told,
/// and counting how many it holds at once.
struct HeldFactory {
    address: SocketAddr,
    held: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
}

impl HeldFactory {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let held = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let (counter, gate) = (held.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, gate) = (counter.clone(), gate.clone());
                tokio::spawn(async move {
                    let (read, write) = stream.into_split();
                    let mut requests = ServerReader::new(read, Limits::default());
                    let writer = Arc::new(tokio::sync::Mutex::new(ServerWriter::new(write)));
                    while let Ok(request) = requests.read_request().await {
                        let (counter, gate, writer) =
                            (counter.clone(), gate.clone(), writer.clone());
                        tokio::spawn(async move {
                            counter.fetch_add(1, Ordering::SeqCst);
                            gate.notified().await;
                            let netrpc::Value::Struct(job) = &request.body else {
                                return;
                            };
                            let product = job.int("X").unwrap() * job.int("Y").unwrap();
                            let ty = StructType::new("JobReport").field("Result", FieldKind::Int);
                            let reply = Record::new(&ty).set("Result", product).unwrap();
                            let _ = writer
                                .lock()
                                .await
                                .write_response(request.seq, &request.service_method, Ok(&reply))
                                .await;
                        });
                    }
                });
            }
        });
        Self {
            address,
            held,
            release,
        }
    }
}

#[tokio::test]
async fn a_go_factory_that_subscribes_n_times_gets_n_calls_and_a_restart_replaces_them() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let go = go_client(broker.address).await;
    go.call(
        "Broker.CreateChannel",
        channel_request("multiply", 100),
        CALL,
    )
    .await
    .unwrap();
    let factory = HeldFactory::start().await;
    for _ in 0..3 {
        go.call(
            "Broker.Subscribe",
            subscription("multiply", factory.address, "Factory.Multiply"),
            CALL,
        )
        .await
        .unwrap();
    }
    for x in 1..=10 {
        go.call("Broker.Publish", publish_request("multiply", x, 10), CALL)
            .await
            .unwrap();
    }
    eventually("three calls held at once", || {
        factory.held.load(Ordering::SeqCst) == 3
    })
    .await;
    let stats = broker.broker.stats().await;
    let subscriber = &stats.subscribers[0];
    assert_eq!(
        (subscriber.prefetch, subscriber.protocol),
        (3, Protocol::GoNetRpc)
    );
    assert_eq!(stats.subscribers.len(), 1);

    // The factory "restarts": a new connection subscribes once, replacing all three.
    let restarted = go_client(broker.address).await;
    restarted
        .call(
            "Broker.Subscribe",
            subscription("multiply", factory.address, "Factory.Multiply"),
            CALL,
        )
        .await
        .unwrap();
    let stats = broker.broker.stats().await;
    assert_eq!(stats.subscribers.len(), 1);
    assert_eq!(stats.subscribers[0].prefetch, 1, "replaced, not added to");
    // Let every call go: each job completes once.
    for _ in 0..50 {
        factory.release.notify_waiters();
        if recorder.completed("multiply").len() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut results = recorder.results("multiply");
    results.sort();
    assert_eq!(results, (1..=10).map(|x| x * 10).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_error_from_a_go_factory_is_a_job_error_and_a_dead_letter() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let go = go_client(broker.address).await;
    go.call("Broker.CreateChannel", channel_request("divide", 10), CALL)
        .await
        .unwrap();
    // A factory whose every call answers with an error, as a Go method returning one.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, write) = stream.into_split();
                let mut requests = ServerReader::new(read, Limits::default());
                let mut writer = ServerWriter::new(write);
                while let Ok(request) = requests.read_request().await {
                    let _ = writer
                        .write_response(
                            request.seq,
                            &request.service_method,
                            Err("division by zero"),
                        )
                        .await;
                }
            });
        }
    });
    go.call(
        "Broker.Subscribe",
        subscription("divide", address, "Worker.Quotient"),
        CALL,
    )
    .await
    .unwrap();
    go.call("Broker.Publish", publish_request("divide", 5, 0), CALL)
        .await
        .unwrap();
    eventually("the job failed", || {
        recorder.outcomes().iter().any(|outcome| {
            outcome.to_string() == "Worker.Quotient of 5 and 0 failed: division by zero"
        })
    })
    .await;
    let letters = broker.broker.dead_letters("divide").await.unwrap();
    assert_eq!(letters.total, 1);
    assert_eq!(letters.letters[0].error.to_string(), "division by zero");
}
