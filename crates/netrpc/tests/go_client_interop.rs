//! A real Go net/rpc client (`tests/go/rpcclient`) calling a server built on `ServerReader`
//! and `ServerWriter`. The Go program checks every answer itself; this side checks what it
//! read.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use netrpc::{
    FieldError, FieldKind, Limits, ReadError, Record, ServerReader, ServerWriter, Struct,
    StructType, Value,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Barrier};

/// How long the Go client may take for all its checks.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many `Broker.Gather` calls the server holds until all have arrived; the Go client
/// sends as many at once.
const GATHERED: usize = 8;

/// Replies waiting for the connection's writer task.
const REPLY_QUEUE: usize = 16;

fn status_report(message: String) -> Record {
    let ty = StructType::new("StatusReport").field("Message", FieldKind::String);
    Record::new(&ty)
        .set("Message", message)
        .expect("a status report")
}

fn job_report(result: i64) -> Record {
    let ty = StructType::new("JobReport").field("Result", FieldKind::Int);
    Record::new(&ty)
        .set("Result", result)
        .expect("a job report")
}

/// What the test server saw: each call's method and argument, and how each connection ended.
#[derive(Default)]
struct Seen {
    calls: Vec<(String, Value)>,
    endings: Vec<String>,
}

/// The lab's broker methods, answered from the argument alone. A field of the wrong kind is
/// answered with the accessor's error, as Go's server answers a gob type mismatch.
async fn answer(method: &str, body: &Value, gather: &Barrier) -> Result<Record, String> {
    let Value::Struct(args) = body else {
        return Err(format!("the argument is a {}, not a struct", body.kind()));
    };
    match method {
        "Broker.CreateChannel" => Ok(status_report(format!(
            "created {} with buffer {}",
            args.string("Topic").map_err(text)?,
            args.int("Buffer").map_err(text)?
        ))),
        "Broker.Publish" => publish(args),
        "Broker.Subscribe" => Ok(status_report(format!(
            "subscribed {} to {} with {}",
            args.string("FactoryAddress").map_err(text)?,
            args.string("Topic").map_err(text)?,
            args.string("Callback").map_err(text)?
        ))),
        "Broker.Gather" => {
            gather.wait().await;
            let call = args.int("Buffer").map_err(text)?;
            Ok(status_report(format!("gathered {call}")))
        }
        "Factory.Multiply" => {
            let (x, y) = (args.int("X").map_err(text)?, args.int("Y").map_err(text)?);
            Ok(job_report(x.wrapping_mul(y)))
        }
        other => Err(format!("unknown method {other}")),
    }
}

fn text(error: FieldError) -> String {
    error.to_string()
}

/// A Part 1 `Pair` or a Part 3 `Triplet`, whichever field the client's type has.
fn publish(args: &Struct) -> Result<Record, String> {
    let topic = args.string("Topic").map_err(text)?;
    if topic != "multiply" {
        return Err("No such topic.".to_owned());
    }
    let numbers = if let Some(triplet) = args.struct_("Triplet").map_err(text)? {
        let [x, y, z] = ["X", "Y", "Z"].map(|field| triplet.int(field));
        format!(
            "({}, {}, {})",
            x.map_err(text)?,
            y.map_err(text)?,
            z.map_err(text)?
        )
    } else if let Some(pair) = args.struct_("Pair").map_err(text)? {
        format!(
            "({}, {})",
            pair.int("X").map_err(text)?,
            pair.int("Y").map_err(text)?
        )
    } else {
        return Err("neither a Pair nor a Triplet".to_owned());
    };
    Ok(status_report(format!("published {numbers} to {topic}")))
}

/// Serves one connection: calls are read here and answered in tasks of their own, whose
/// replies one writer task sends in the order they finish.
async fn serve_connection(stream: TcpStream, seen: Arc<Mutex<Seen>>, gather: Arc<Barrier>) {
    let (read_half, write_half) = stream.into_split();
    let mut reader = ServerReader::new(read_half, Limits::default());
    let (replies, mut to_send) =
        mpsc::channel::<(u64, String, Result<Record, String>)>(REPLY_QUEUE);
    let writer = tokio::spawn(async move {
        let mut writer = ServerWriter::new(write_half);
        while let Some((seq, method, reply)) = to_send.recv().await {
            let reply = reply.as_ref().map_err(String::as_str);
            writer.write_response(seq, &method, reply).await?;
        }
        std::io::Result::Ok(())
    });
    let ending = loop {
        match reader.read_request().await {
            Ok(request) => {
                seen.lock()
                    .unwrap()
                    .calls
                    .push((request.service_method.clone(), request.body.clone()));
                let (replies, gather) = (replies.clone(), Arc::clone(&gather));
                tokio::spawn(async move {
                    let reply = answer(&request.service_method, &request.body, &gather).await;
                    let _ = replies
                        .send((request.seq, request.service_method, reply))
                        .await;
                });
            }
            Err(ReadError::Closed) => break "closed".to_owned(),
            Err(error) => break error.to_string(),
        }
    };
    drop(replies);
    let _ = writer.await;
    seen.lock().unwrap().endings.push(ending);
}

#[tokio::test]
async fn a_go_client_gets_answers_from_a_rust_server() {
    let client = support::go_binary("rpcclient");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address").to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let gather = Arc::new(Barrier::new(GATHERED));
    let server = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("the Go client connects");
            serve_connection(stream, seen, gather).await;
        })
    };

    let child = support::spawn(&client, &[&address]);
    let output = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .expect("the Go client finished in time")
        .expect("the Go client ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Go client failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    server.await.expect("the server task");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.endings, ["closed"], "the client closed cleanly");
    let methods: Vec<&str> = seen
        .calls
        .iter()
        .map(|(method, _)| method.as_str())
        .collect();
    assert_eq!(
        methods.iter().filter(|m| **m == "Broker.Gather").count(),
        GATHERED
    );
    assert_eq!(
        &methods[..10],
        [
            "Broker.CreateChannel",
            "Broker.Publish",
            "Broker.Publish",
            "Broker.Publish",
            "Broker.Subscribe",
            "Broker.Publish",
            "Broker.CreateChannel",
            "Broker.Nothing",
            "Broker.CreateChannel",
            "Factory.Multiply",
        ]
    );
    let Value::Struct(extended) = &seen.calls[8].1 else {
        panic!("a struct");
    };
    assert_eq!(extended.string("Topic"), Ok("extended"));
    assert_eq!(extended.int("Buffer"), Ok(7));
    assert_eq!(
        extended.get("Any"),
        Some(&Value::Other(netrpc::OtherKind::Interface))
    );
    assert!(stdout.contains("ok overlapping calls"), "{stdout}");
}
