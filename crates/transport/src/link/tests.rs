//! The link against servers on loopback: waiting at start, giving up together, stopping.

use super::*;
use crate::{accept, Admission, HandshakeError};
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A server on `listener` that holds each connection it accepts until `stop`.
fn serve(
    listener: tokio::net::TcpListener,
    admission: Admission,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let hold = {
        let stop = stop.clone();
        move |_stream, _| {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        }
    };
    tokio::spawn(accept(listener, admission, stop, TaskTracker::new(), hold))
}

/// A free loopback port, nobody listening on it.
async fn free_port() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A listener on `address` that notes when each dial came and hangs up at once, as a
/// port taken by something that is not a broker does.
async fn hang_up_on_dials(address: std::net::SocketAddr) -> Arc<Mutex<Vec<Instant>>> {
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let dials = Arc::new(Mutex::new(Vec::new()));
    let noted = dials.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            noted.lock().push(Instant::now());
            drop(stream);
        }
    });
    dials
}

/// Waits until `dials` holds `count`, for a few seconds at most.
async fn until_dialled(dials: &Mutex<Vec<Instant>>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while dials.lock().len() < count {
        assert!(Instant::now() < deadline, "{} dials", dials.lock().len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Longer than any test waits: a link that ends sooner ended for another reason.
const NEVER: Duration = Duration::from_secs(600);
/// How soon after a stop the link must let go.
const AT_ONCE: Duration = Duration::from_millis(500);

#[tokio::test]
async fn a_stop_ends_the_wait_for_a_broker_at_once() {
    let address = free_port().await;
    let dials = hang_up_on_dials(address).await;
    let config = LinkConfig {
        wait_for_broker: NEVER,
        ..LinkConfig::to(address.to_string())
    };
    let shutdown = CancellationToken::new();
    let connecting = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { BrokerLink::connect(&config, shutdown).await }
    });
    // Waiting: dialled, told no, and dialled again after a pause.
    until_dialled(&dials, 2).await;
    let stopped = Instant::now();
    shutdown.cancel();
    let connected = connecting.await.unwrap();
    assert!(matches!(connected, Ok(None)), "{:?}", connected.err());
    assert!(stopped.elapsed() < AT_ONCE, "{:?}", stopped.elapsed());
}

#[tokio::test]
async fn a_stop_ends_a_reconnect_at_once_with_the_call_that_waited_on_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop_server = CancellationToken::new();
    let server = serve(listener, Admission::default(), stop_server.clone());
    let shutdown = CancellationToken::new();
    let config = LinkConfig {
        give_up_after: NEVER,
        ..LinkConfig::to(address.to_string())
    };
    let link = BrokerLink::connect(&config, shutdown.clone())
        .await
        .unwrap()
        .expect("not stopped");
    let call = tokio::spawn({
        let link = link.clone();
        async move {
            link.call(&(), |client, ()| async move {
                client.stats(tarpc::context::current()).await
            })
            .await
        }
    });
    // The broker goes away, and what takes its port hangs up: the link keeps dialling.
    stop_server.cancel();
    server.await.unwrap();
    let dials = hang_up_on_dials(address).await;
    until_dialled(&dials, 2).await;
    let stopped = Instant::now();
    shutdown.cancel();
    let called = call.await.unwrap();
    assert!(matches!(called, Err(LinkError::Stopped)), "{called:?}");
    assert!(stopped.elapsed() < AT_ONCE, "{:?}", stopped.elapsed());
}

#[tokio::test]
async fn at_start_the_link_waits_for_a_broker_that_comes_up_and_gets_ready_later() {
    const COMES_UP_AFTER: Duration = Duration::from_millis(300);
    const READY_AFTER: Duration = Duration::from_millis(300);
    let address = free_port().await;
    let stop = CancellationToken::new();
    let broker = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(COMES_UP_AFTER).await;
            let listener = tokio::net::TcpListener::bind(address).await.unwrap();
            let not_ready = tokio::time::sleep(READY_AFTER);
            crate::starting::refuse_while(&listener, crate::starting::not_ready(None), not_ready)
                .await;
            serve(listener, Admission::default(), stop).await.unwrap();
        })
    };
    let config = LinkConfig {
        wait_for_broker: Duration::from_secs(30),
        ..LinkConfig::to(address.to_string())
    };
    let started = Instant::now();
    let link = BrokerLink::connect(&config, CancellationToken::new()).await;
    let waited = started.elapsed();
    assert!(matches!(link, Ok(Some(_))), "{:?}", link.err());
    assert!(waited >= COMES_UP_AFTER + READY_AFTER, "{waited:?}");
    // The backoff's longest pause, and a little for a busy machine.
    assert!(
        waited < COMES_UP_AFTER + READY_AFTER + crate::retry::RETRY_MAX_DELAY * 2,
        "{waited:?}"
    );
    stop.cancel();
    broker.await.unwrap();
}

#[tokio::test]
async fn without_a_wait_a_broker_that_is_not_up_is_an_error_at_once() {
    let address = free_port().await;
    let started = Instant::now();
    let error = BrokerLink::connect(
        &LinkConfig::to(address.to_string()),
        CancellationToken::new(),
    )
    .await
    .err();
    assert!(
        matches!(error, Some(ConnectError::Connect { .. })),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn the_wait_at_start_ends_with_the_last_error() {
    const WAIT: Duration = Duration::from_millis(500);
    let address = free_port().await;
    let config = LinkConfig {
        wait_for_broker: WAIT,
        ..LinkConfig::to(address.to_string())
    };
    let started = Instant::now();
    let error = BrokerLink::connect(&config, CancellationToken::new())
        .await
        .err();
    let waited = started.elapsed();
    assert!(
        matches!(error, Some(ConnectError::Connect { .. })),
        "{error:?}"
    );
    assert!(waited >= WAIT, "{waited:?}");
    assert!(waited < WAIT + Duration::from_secs(1), "{waited:?}");
}

#[tokio::test]
async fn a_refused_token_or_a_name_that_does_not_resolve_is_not_waited_for() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let admission = Admission {
        token: AccessToken::new("s3cret").unwrap(),
        ..Admission::default()
    };
    let server = serve(listener, admission, stop.clone());
    let wrong_token = LinkConfig {
        wait_for_broker: Duration::from_secs(30),
        token: AccessToken::new("guess").unwrap(),
        ..LinkConfig::to(address.to_string())
    };
    // A broker that is down comes first in the list: it is not what the wait is for.
    let down = free_port().await;
    let both = LinkConfig {
        brokers: vec![down.to_string(), address.to_string()],
        ..wrong_token.clone()
    };
    let unknown = LinkConfig {
        wait_for_broker: Duration::from_secs(30),
        ..LinkConfig::to("no-such-host.invalid:8030")
    };
    let started = Instant::now();
    for config in [wrong_token, both] {
        let error = BrokerLink::connect(&config, CancellationToken::new())
            .await
            .err();
        assert!(
            matches!(
                error,
                Some(ConnectError::Handshake {
                    source: HandshakeError::WrongToken,
                    ..
                })
            ),
            "{error:?}"
        );
    }
    let error = BrokerLink::connect(&unknown, CancellationToken::new())
        .await
        .err();
    assert!(
        matches!(error, Some(ConnectError::Resolve { .. })),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    stop.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn callers_that_lost_the_same_connection_give_up_together() {
    // A server that takes the handshake, then holds each connection until it stops.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let server = tokio::spawn(accept(
        listener,
        Admission::default(),
        stop.clone(),
        connections.clone(),
        {
            let stop = stop.clone();
            move |mut stream, _| {
                let stop = stop.clone();
                async move {
                    let mut buffer = [0u8; 1024];
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = async { while stream.read(&mut buffer).await.is_ok_and(|n| n > 0) {} } => {}
                    }
                }
            }
        },
    ));
    let link = BrokerLink::connect(
        &LinkConfig {
            connect_timeout: Duration::from_millis(100),
            give_up_after: Duration::from_millis(300),
            ..LinkConfig::to(address.to_string())
        },
        CancellationToken::new(),
    )
    .await
    .unwrap()
    .expect("not stopped");
    // Four calls waiting on the server, which never answers.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let link = link.clone();
            tokio::spawn(async move {
                let result = link
                    .call(&(), |client, ()| async move {
                        client.stats(tarpc::context::current()).await
                    })
                    .await;
                (result, Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The server goes away; in its place, one that notes each dial and hangs up at once.
    stop.cancel();
    server.await.unwrap();
    connections.close();
    connections.wait().await;
    let dials = hang_up_on_dials(address).await;

    let mut first_gone = None::<Instant>;
    for call in calls {
        let (result, at) = call.await.unwrap();
        let error = result.expect_err("the broker is gone");
        assert!(matches!(error, LinkError::Gone { .. }), "{error:?}");
        first_gone = Some(first_gone.map_or(at, |first| first.min(at)));
    }
    let first_gone = first_gone.unwrap();
    let dials = dials.lock().clone();
    assert!(!dials.is_empty(), "the link dialled again");
    // Once one caller has given up, the others give up with it instead of dialling anew.
    assert!(
        dials.iter().all(|dial| *dial <= first_gone),
        "{} of {} dials came after the first caller gave up",
        dials.iter().filter(|dial| **dial > first_gone).count(),
        dials.len()
    );
}
