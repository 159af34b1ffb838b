//! `Client` calling a real Go net/rpc server (`tests/go/rpcserver`), as the broker calls a
//! Go factory.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use netrpc::{CallError, Client, FieldKind, Record, StructType};
use tokio::process::Child;

/// Long enough for any answer from a process on this machine; a call that takes it has hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to dial the Go server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Go factory on a free loopback port, killed when dropped.
struct GoFactory {
    process: Child,
    address: SocketAddr,
}

async fn go_factory() -> GoFactory {
    let binary = support::go_binary("rpcserver");
    let mut process = support::spawn(&binary, &[]);
    let line = support::first_line(&mut process).await;
    let address = line
        .strip_prefix("listening ")
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("the Go server said {line:?}"));
    GoFactory { process, address }
}

async fn connect(factory: &GoFactory) -> Client {
    Client::connect(factory.address, CONNECT_TIMEOUT)
        .await
        .expect("connected to the Go server")
}

fn pair(x: i64, y: i64) -> Record {
    let ty = StructType::new("Pair")
        .field("X", FieldKind::Int)
        .field("Y", FieldKind::Int);
    Record::new(&ty)
        .set("X", x)
        .and_then(|pair| pair.set("Y", y))
        .expect("a pair")
}

async fn result_of(
    client: &Client,
    method: &str,
    args: Record,
    timeout: Duration,
) -> Result<i64, CallError> {
    let report = client.call(method, args, timeout).await?;
    Ok(report.int("Result").expect("an int Result"))
}

#[tokio::test]
async fn multiply_returns_the_job_report_go_computed() {
    let factory = go_factory().await;
    let client = connect(&factory).await;
    let report = client
        .call("Factory.Multiply", pair(-6, 7), CALL_TIMEOUT)
        .await
        .expect("a reply");
    assert_eq!(report.type_name(), "JobReport");
    assert_eq!(report.int("Result"), Ok(-42));
    // Large operands travel whole: Go's int is 64 bits.
    let big = 999_999_999;
    assert_eq!(
        result_of(&client, "Factory.Multiply", pair(big, big), CALL_TIMEOUT).await,
        Ok(big * big)
    );
}

#[tokio::test]
async fn an_error_from_the_go_method_is_a_remote_error_and_the_connection_carries_on() {
    let factory = go_factory().await;
    let client = connect(&factory).await;
    assert_eq!(
        result_of(&client, "Factory.Divide", pair(1, 0), CALL_TIMEOUT).await,
        Err(CallError::Remote("division by zero".to_owned()))
    );
    // Go's own server answers a method it does not have with an error, too.
    let unknown = result_of(&client, "Factory.Nothing", pair(1, 1), CALL_TIMEOUT).await;
    assert!(
        matches!(unknown, Err(CallError::Remote(ref m)) if m.contains("Nothing")),
        "{unknown:?}"
    );
    assert_eq!(
        result_of(&client, "Factory.Divide", pair(42, 6), CALL_TIMEOUT).await,
        Ok(7)
    );
}

#[tokio::test]
async fn a_call_past_its_timeout_times_out_and_the_connection_carries_on() {
    let factory = go_factory().await;
    let client = connect(&factory).await;
    let sleep_millis = 300;
    assert_eq!(
        result_of(
            &client,
            "Factory.Sleep",
            pair(sleep_millis, 5),
            Duration::from_millis(50)
        )
        .await,
        Err(CallError::TimedOut)
    );
    // The late reply arrives while this call waits, and is dropped.
    assert_eq!(
        result_of(
            &client,
            "Factory.Sleep",
            pair(2 * sleep_millis, 6),
            CALL_TIMEOUT
        )
        .await,
        Ok(6)
    );
    assert!(!client.is_closed());
}

#[tokio::test]
async fn several_calls_in_flight_get_their_own_replies() {
    let factory = go_factory().await;
    let client = connect(&factory).await;
    // The Go server holds every Gather call until all have arrived: they complete only if
    // they are in flight together on the one connection.
    let gathered = 6;
    let calls = (0..gathered).map(|x| {
        let client = client.clone();
        async move { result_of(&client, "Factory.Gather", pair(x, gathered), CALL_TIMEOUT).await }
    });
    let results = futures::future::join_all(calls).await;
    let expected: Vec<Result<i64, CallError>> = (0..gathered).map(Ok).collect();
    assert_eq!(results, expected);
}

#[tokio::test]
async fn dropping_a_call_leaves_the_others_working() {
    let factory = go_factory().await;
    let client = connect(&factory).await;
    // Polled once, a call is queued for the writer; then its caller gives up on it.
    let mut abandoned = Box::pin(result_of(
        &client,
        "Factory.Gather",
        pair(1, 2),
        CALL_TIMEOUT,
    ));
    assert!(futures::poll!(&mut abandoned).is_pending());
    drop(abandoned);
    // The Go server answers this Gather only once the abandoned one has reached it too; the
    // abandoned call's reply then comes back, and must be dropped rather than misrouted.
    assert_eq!(
        result_of(&client, "Factory.Gather", pair(2, 2), CALL_TIMEOUT).await,
        Ok(2)
    );
    for x in 0..3 {
        assert_eq!(
            result_of(&client, "Factory.Multiply", pair(x, 10), CALL_TIMEOUT).await,
            Ok(x * 10)
        );
    }
}

#[tokio::test]
async fn killing_the_go_server_mid_call_fails_every_pending_call() {
    let mut factory = go_factory().await;
    let client = connect(&factory).await;
    let mut pending: Vec<_> = (0..3)
        .map(|y| {
            Box::pin(result_of(
                &client,
                "Factory.Sleep",
                pair(60_000, y),
                CALL_TIMEOUT,
            ))
        })
        .collect();
    for call in &mut pending {
        assert!(futures::poll!(call).is_pending());
    }
    // Go's server reads calls in order, so an answer to a call sent after the sleeps shows
    // that they are all running there.
    assert_eq!(
        result_of(&client, "Factory.Multiply", pair(2, 2), CALL_TIMEOUT).await,
        Ok(4)
    );
    factory.process.kill().await.expect("killed the Go server");
    for call in pending {
        let result = call.await;
        assert!(matches!(result, Err(CallError::Transport(_))), "{result:?}");
    }
    assert!(client.is_closed());
    assert!(matches!(
        result_of(&client, "Factory.Multiply", pair(1, 1), CALL_TIMEOUT).await,
        Err(CallError::Transport(_))
    ));
}

#[tokio::test]
async fn connecting_where_nobody_listens_fails() {
    // A port the Go server listened on and no longer does.
    let mut factory = go_factory().await;
    let address = factory.address;
    factory.process.kill().await.expect("killed the Go server");
    assert!(Client::connect(address, CONNECT_TIMEOUT).await.is_err());
}
