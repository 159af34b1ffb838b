//! The Go front door: a Go lab program's `rpc.Dial("tcp", broker)` and `client.Call`, served on
//! the broker's own port. Each request is forwarded to [`BrokerState`]; nothing here decides about
//! jobs.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netrpc::{
    FieldKind, Limits, ReadError, Record, ServerReader, ServerWriter, Struct, StructType, Value,
};
use parking_lot::Mutex;
use stubs::{BrokerError, ChannelRequest, Job, Pair, PublishRequest, Subscription, Triplet};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::requests::BrokerState;

/// The Go lab's answer to an unknown topic, word for word, which its students' code may match.
pub const NO_SUCH_TOPIC: &str = "No such topic.";

/// How long a Go publish to a full topic waits for room: as long as its connection lives, as
/// the Go broker's channel send blocks. A year stands for "for ever" where a deadline is needed.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A reply on its way to the connection's one writer.
struct Reply {
    seq: u64,
    service_method: String,
    body: Result<Record, String>,
}

/// What one connection's subscribes asked for: a Go factory that subscribes N times with the
/// same address and callback gets N calls in flight, as the Go broker's N loops would give it.
type Subscribes = Mutex<HashMap<(String, String, String), u32>>;

/// Serves one Go client's connection until it closes or the broker stops. `read` holds the
/// bytes the broker read to tell the protocol apart: the start of the client's first message.
pub async fn serve_connection(
    broker: Arc<BrokerState>,
    stream: TcpStream,
    read: Vec<u8>,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let (incoming, outgoing) = stream.into_split();
    let mut requests = ServerReader::new(Cursor::new(read).chain(incoming), Limits::default());
    let max_requests = broker.settings().admission.max_requests_per_connection;
    let (replies, to_write) = mpsc::channel::<Reply>(max_requests);
    // Gone: stops the requests still waiting, e.g. a publish waiting for room, which then
    // leaves no job behind.
    let gone = shutdown.child_token();
    let writer = tokio::spawn(write_replies(outgoing, to_write, gone.clone()));
    tracing::debug!("a Go net/rpc client connected from {peer}");
    let slots = Arc::new(Semaphore::new(max_requests));
    let calls = TaskTracker::new();
    let subscribes: Arc<Subscribes> = Arc::default();
    loop {
        let request = tokio::select! {
            _ = gone.cancelled() => break,
            request = requests.read_request() => request,
        };
        let request = match request {
            Ok(request) => request,
            Err(ReadError::Closed) => break,
            Err(error) => {
                tracing::warn!(
                    "the Go client at {peer} sent what net/rpc cannot read ({error}); closing its connection"
                );
                break;
            }
        };
        // A client that never reads its replies holds at most this many calls.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (broker, replies, gone, subscribes) = (
            broker.clone(),
            replies.clone(),
            gone.clone(),
            subscribes.clone(),
        );
        calls.spawn(async move {
            let body = tokio::select! {
                _ = gone.cancelled() => return,
                body = answer(&broker, &request.service_method, &request.body, &subscribes) => body,
            };
            let _ = replies
                .send(Reply {
                    seq: request.seq,
                    service_method: request.service_method,
                    body,
                })
                .await;
            drop(slot);
        });
    }
    gone.cancel();
    calls.close();
    calls.wait().await;
    drop(replies);
    let _ = writer.await;
    tracing::debug!("the Go net/rpc client at {peer} closed its connection");
}

/// The connection's one writer: writes each reply as it comes, until the replies end or
/// writing fails; then `gone` is cancelled.
async fn write_replies(
    outgoing: tokio::net::tcp::OwnedWriteHalf,
    mut to_write: mpsc::Receiver<Reply>,
    gone: CancellationToken,
) {
    let mut writer = ServerWriter::new(outgoing);
    while let Some(reply) = to_write.recv().await {
        let written = writer
            .write_response(
                reply.seq,
                &reply.service_method,
                reply.body.as_ref().map_err(String::as_str),
            )
            .await;
        if written.is_err() {
            break;
        }
    }
    gone.cancel();
}

/// One request's answer: the reply's body, or the error string net/rpc carries.
async fn answer(
    broker: &Arc<BrokerState>,
    service_method: &str,
    body: &Value,
    subscribes: &Subscribes,
) -> Result<Record, String> {
    let Value::Struct(args) = body else {
        return Err(format!(
            "{service_method}: the argument is a {}, not a struct",
            body.kind()
        ));
    };
    let wrong = |error: netrpc::FieldError| format!("{service_method}: {error}");
    match service_method {
        "Broker.CreateChannel" => {
            let buffer = args.int("Buffer").map_err(wrong)?;
            let request = ChannelRequest {
                topic: args.string("Topic").map_err(wrong)?.to_owned(),
                // Out of range either way: the broker's own check says what the range is.
                buffer: u32::try_from(buffer).unwrap_or(if buffer < 0 { 0 } else { u32::MAX }),
            };
            let report = broker.create_channel(request).await.map_err(go_error)?;
            Ok(status(report.message))
        }
        "Broker.Publish" => {
            let request = PublishRequest {
                topic: args.string("Topic").map_err(wrong)?.to_owned(),
                job: job_of(args).map_err(wrong)?,
            };
            let deadline = Instant::now()
                .checked_add(PUBLISH_PATIENCE)
                .unwrap_or_else(Instant::now);
            let published = broker.publish(request, deadline).await.map_err(go_error)?;
            Ok(status(format!("published as job {}", published.job_id)))
        }
        "Broker.Subscribe" => {
            let (topic, address, callback) = (
                args.string("Topic").map_err(wrong)?.to_owned(),
                args.string("FactoryAddress").map_err(wrong)?.to_owned(),
                args.string("Callback").map_err(wrong)?.to_owned(),
            );
            let prefetch = {
                let mut counts = subscribes.lock();
                let count = counts
                    .entry((topic.clone(), address.clone(), callback.clone()))
                    .or_insert(0);
                *count = count.saturating_add(1).min(crate::queue::MAX_PREFETCH);
                *count
            };
            let subscription = Subscription {
                topic,
                factory_address: address,
                callback,
                prefetch,
            };
            let report = broker.subscribe_go(subscription).await.map_err(go_error)?;
            Ok(status(report.message))
        }
        _ => Err(match service_method.split_once('.') {
            Some(("Broker", _)) => format!("rpc: can't find method {service_method}"),
            Some((service, _)) => format!("rpc: can't find service {service}"),
            None => format!("rpc: service/method request ill-formed: {service_method}"),
        }),
    }
}

/// The job of a publish: a `Triplet` field makes it a Triplet (Part 3's request), anything
/// else a Pair, whose zero fields Go's encoder leaves out.
fn job_of(args: &Struct) -> Result<Job, netrpc::FieldError> {
    if let Some(triplet) = args.struct_("Triplet")? {
        return Ok(Job::Triplet(Triplet {
            x: triplet.int("X")?,
            y: triplet.int("Y")?,
            z: triplet.int("Z")?,
        }));
    }
    let pair = match args.struct_("Pair")? {
        Some(pair) => Pair {
            x: pair.int("X")?,
            y: pair.int("Y")?,
        },
        None => Pair { x: 0, y: 0 },
    };
    Ok(Job::Pair(pair))
}

/// The Go lab's `StatusReport{Message string}`.
fn status(message: String) -> Record {
    let ty = StructType::new("StatusReport").field("Message", FieldKind::String);
    let record = Record::new(&ty);
    // `Message` is the type's one field, a String.
    record.clone().set("Message", message).unwrap_or(record)
}

/// A refusal as net/rpc carries it; an unknown topic in the Go lab's own words.
fn go_error(error: BrokerError) -> String {
    match error {
        BrokerError::NoSuchTopic { .. } => NO_SUCH_TOPIC.to_owned(),
        other => other.to_string(),
    }
}
