//! Access control and hostile bytes on the broker's port: the broker stays up and keeps
//! serving its real clients.

use std::net::SocketAddr;
use std::time::Duration;

use broker::Settings;
use factory::cli::LabTopic::Multiply;
use stubs::{ChannelRequest, Pair};
use system_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
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
    let request = ChannelRequest {
        topic: "still-here".into(),
        buffer: 100_000,
    };
    client
        .create_channel(tarpc::context::current(), request)
        .await
        .expect("the broker answers")
        .expect("the broker accepts");
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
    let factory = start_factory(
        &broker,
        0,
        factory_config(broker.address, &[Multiply], false),
    )
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_from_one_host_do_not_crowd_out_the_others() {
    let (broker, _) = start_broker(Settings::default()).await;
    // The idle host is 127.0.0.2, another loopback address, so that the per-address cap
    // applies to it and not to the real clients on 127.0.0.1.
    let idle_host: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..2_000 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(idle_host).unwrap();
        if let Ok(stream) = socket.connect(broker.address).await {
            idle.push(stream);
        }
    }
    // Half of them completed the handshake and then went quiet; the rest never said a word.
    for stream in idle.iter_mut().step_by(2) {
        let _ = handshake::offer(stream, &AccessToken::none()).await;
    }
    still_serves(broker.address, AccessToken::none()).await;
    let client = client(broker.address).await;
    for x in 0..100 {
        publish(&client, "still-here", Pair { x, y: 1 }).await;
    }
    drop(idle);
    still_serves(broker.address, AccessToken::none()).await;
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
