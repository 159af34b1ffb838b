//! The bytes Go's encoder writes for a few net/rpc messages, checked against ours both ways.
//!
//! The `.gob` files beside `tests/go/gobbytes/main.go` were written once by it with Go 1.19: a
//! fresh `gob.Encoder` in a fresh process, encoding net/rpc's header types and the lab's types
//! in the order a client or server sends them. A fresh process numbers its types from 65, as
//! our encoder does, so the bytes compare exactly.

use crate::encode::GobEncoder;
use crate::fixtures::{pair_type, publish_type};
use crate::reader::GobReader;
use crate::record::{FieldKind, Record, StructType};
use crate::server::{ServerReader, ServerWriter};
use crate::value::{OtherKind, Value};
use crate::{header, Limits};

/// Two calls as a client sends them: `Request{"Broker.Publish", 0}` (type 65 defined, then the
/// value; a zero `Seq` is left out), `PublishRequest{"multiply", Pair{3, 4}}` (`PublishRequest`,
/// 66, is defined before `Pair`, 67, which it names), `Request{"Broker.Publish", 1}` (the type
/// is known by now) and `PublishRequest{"multiply", Pair{-5, 0}}` (a zero `Y` is left out, the
/// nested struct is not).
const REQUEST: &[u8] = include_bytes!("../tests/go/gobbytes/request.gob");

/// Two replies as a server sends them: `Response{"Broker.Publish", 7, ""}` and
/// `StatusReport{"ok"}`, then `Response{"Broker.Publish", 8, "No such topic."}` and Go's
/// `invalidRequest`, an anonymous `struct{}` whose definition has no name and no fields.
const RESPONSE: &[u8] = include_bytes!("../tests/go/gobbytes/response.gob");

/// A `ChannelRequest` with, besides `Topic` and `Buffer`, a field of every other gob kind: a
/// slice, a map, an array, a float, a complex, bytes, an interface holding a `Pair`, a
/// `time.Time` (a GobEncoder), a slice of structs, a bool and a uint. The six type
/// definitions come first, each a message of its own.
const EXTRAS: &[u8] = include_bytes!("../tests/go/gobbytes/extras.gob");

/// Then, on the same encoder, a `ChannelRequest` whose interface holds a `Wrapper` whose
/// interface holds a `Triplet`, both types new: the value continues into a second message
/// after `Wrapper`'s definition, and `Triplet`'s definition sits inside the second.
const NESTED_INTERFACES: &[u8] = include_bytes!("../tests/go/gobbytes/nested.gob");

fn publish(x: i64, y: i64) -> Record {
    let pair = Record::new(&pair_type())
        .set("X", x)
        .and_then(|pair| pair.set("Y", y))
        .expect("a pair");
    Record::new(&publish_type())
        .set("Topic", "multiply")
        .and_then(|request| request.set("Pair", pair))
        .expect("a publish request")
}

fn status_report(message: &str) -> Record {
    let ty = StructType::new("StatusReport").field("Message", FieldKind::String);
    Record::new(&ty)
        .set("Message", message)
        .expect("a status report")
}

#[test]
fn our_calls_are_the_bytes_go_writes() {
    let mut encoder = GobEncoder::new();
    let mut ours = Vec::new();
    encoder.encode(&header::request(0, "Broker.Publish"), &mut ours);
    encoder.encode(&publish(3, 4), &mut ours);
    encoder.encode(&header::request(1, "Broker.Publish"), &mut ours);
    encoder.encode(&publish(-5, 0), &mut ours);
    assert_eq!(ours, REQUEST);
}

#[tokio::test]
async fn our_replies_are_the_bytes_go_writes() {
    let mut writer = ServerWriter::new(Vec::new());
    writer
        .write_response(7, "Broker.Publish", Ok(&status_report("ok")))
        .await
        .expect("written");
    writer
        .write_response(8, "Broker.Publish", Err("No such topic."))
        .await
        .expect("written");
    assert_eq!(*writer.get_mut(), RESPONSE);
}

#[tokio::test]
async fn calls_go_writes_read_as_requests() {
    let mut reader = ServerReader::new(REQUEST, Limits::default());

    let first = reader.read_request().await.expect("the first call");
    assert_eq!(
        (first.service_method.as_str(), first.seq),
        ("Broker.Publish", 0)
    );
    let Value::Struct(body) = &first.body else {
        panic!("a struct body, not {:?}", first.body);
    };
    assert_eq!(body.type_name(), "PublishRequest");
    assert_eq!(body.string("Topic"), Ok("multiply"));
    let pair = body.struct_("Pair").expect("a struct").expect("present");
    assert_eq!((pair.int("X"), pair.int("Y")), (Ok(3), Ok(4)));

    let second = reader.read_request().await.expect("the second call");
    assert_eq!(second.seq, 1);
    let Value::Struct(body) = &second.body else {
        panic!("a struct body, not {:?}", second.body);
    };
    let pair = body.struct_("Pair").expect("a struct").expect("present");
    assert_eq!((pair.int("X"), pair.int("Y")), (Ok(-5), Ok(0)));
    assert!(!pair.has("Y") && pair.declares("Y"));

    assert!(matches!(
        reader.read_request().await,
        Err(crate::ReadError::Closed)
    ));
}

async fn next(reader: &mut GobReader<&[u8]>) -> Value {
    reader
        .read_value()
        .await
        .expect("a value")
        .expect("not the end")
}

#[tokio::test]
async fn replies_go_writes_read_back() {
    let mut reader = GobReader::new(RESPONSE, Limits::default());

    let header = header::parse_response(next(&mut reader).await).expect("a response header");
    assert_eq!((header.seq, header.error.as_str()), (7, ""));
    let Value::Struct(report) = next(&mut reader).await else {
        panic!("a struct body");
    };
    assert_eq!(report.string("Message"), Ok("ok"));

    let header = header::parse_response(next(&mut reader).await).expect("a response header");
    assert_eq!((header.seq, header.error.as_str()), (8, "No such topic."));
    let Value::Struct(empty) = next(&mut reader).await else {
        panic!("a struct body");
    };
    assert_eq!((empty.type_name(), empty.fields().count()), ("", 0));
}

#[tokio::test]
async fn fields_of_every_other_kind_are_read_and_set_aside() {
    let go = [EXTRAS, NESTED_INTERFACES].concat();
    let mut reader = GobReader::new(go.as_slice(), Limits::default());

    let Value::Struct(first) = next(&mut reader).await else {
        panic!("a struct");
    };
    assert_eq!(first.string("Topic"), Ok("multiply"));
    assert_eq!(first.int("Buffer"), Ok(10));
    let kinds: Vec<(&str, &Value)> = first.fields().collect();
    assert_eq!(
        kinds,
        [
            ("Topic", &Value::String("multiply".into())),
            ("Tags", &Value::Other(OtherKind::Slice)),
            ("Meta", &Value::Other(OtherKind::Map)),
            ("Grid", &Value::Other(OtherKind::Array)),
            ("Ratio", &Value::Float(0.5)),
            ("Wave", &Value::Other(OtherKind::Complex)),
            ("Raw", &Value::Bytes(vec![1, 2, 3])),
            ("Any", &Value::Other(OtherKind::Interface)),
            ("When", &Value::Other(OtherKind::Opaque)),
            ("History", &Value::Other(OtherKind::Slice)),
            ("Flag", &Value::Bool(true)),
            ("Count", &Value::Uint(9)),
            ("Buffer", &Value::Int(10)),
        ]
    );

    let Value::Struct(second) = next(&mut reader).await else {
        panic!("a struct");
    };
    assert_eq!(second.string("Topic"), Ok("divide"));
    assert_eq!(second.get("Any"), Some(&Value::Other(OtherKind::Interface)));
    assert_eq!(second.int("Buffer"), Ok(3));

    assert!(matches!(reader.read_value().await, Ok(None)));
}

#[tokio::test]
async fn a_value_split_across_messages_needs_its_second_message() {
    // The first message of the nested-interface value alone: its reader must wait for more,
    // and a stream that ends there ends inside a value.
    let go = [EXTRAS, &NESTED_INTERFACES[..0x46]].concat();
    let mut reader = GobReader::new(go.as_slice(), Limits::default());
    next(&mut reader).await;
    match reader.read_value().await {
        Err(crate::ReadError::Io(error)) => {
            assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof)
        }
        other => panic!("expected an unexpected end, got {other:?}"),
    }
}

/// One change to a byte stream.
#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len().max(1);
        match *mutation {
            Mutation::Set(at, byte) => {
                if let Some(slot) = bytes.get_mut(at % len) {
                    *slot = byte;
                }
            }
            Mutation::Insert(at, byte) => bytes.insert(at % (bytes.len() + 1), byte),
            Mutation::Remove(at) => {
                if !bytes.is_empty() {
                    bytes.remove(at % len);
                }
            }
            Mutation::Truncate(at) => bytes.truncate(at % len),
        }
    }
    bytes
}

fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

    /// Streams Go wrote, of every kind of value, damaged: each read ends in a value, an error
    /// or the end, never a panic, and there are no more reads than bytes.
    #[test]
    fn damaged_go_streams_never_panic(
        mutations in proptest::collection::vec(mutation(), 1..4),
        stream in 0..3usize,
    ) {
        let go = match stream {
            0 => REQUEST.to_vec(),
            1 => RESPONSE.to_vec(),
            _ => [EXTRAS, NESTED_INTERFACES].concat(),
        };
        let bytes = mutate(go, &mutations);
        let mut reader = GobReader::new(bytes.as_slice(), Limits::default());
        let values = futures::executor::block_on(async {
            let mut values = 0;
            while let Ok(Some(_)) = reader.read_value().await {
                values += 1;
            }
            values
        });
        proptest::prop_assert!(values <= bytes.len());
    }
}
