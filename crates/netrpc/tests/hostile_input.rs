//! What a broken or hostile peer can send a `ServerReader`: every input ends in a request, an
//! error or the end of the stream, within work bounded by its length, and nothing panics.

use std::time::Duration;

use netrpc::{FieldError, Limits, Malformed, ReadError, Request, ServerReader, Value};
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

/// gob's encodings, written by hand so that tests can say exactly what a peer sends.
mod gob {
    pub fn uint(out: &mut Vec<u8>, value: u64) {
        if value < 0x80 {
            out.push(value as u8);
            return;
        }
        let digits = value.to_be_bytes();
        let skip = digits.iter().take_while(|&&digit| digit == 0).count();
        out.push(((digits.len() - skip) as u8).wrapping_neg());
        out.extend_from_slice(&digits[skip..]);
    }

    pub fn int(out: &mut Vec<u8>, value: i64) {
        let u = if value < 0 {
            ((!value as u64) << 1) | 1
        } else {
            (value as u64) << 1
        };
        uint(out, u);
    }

    pub fn string(out: &mut Vec<u8>, text: &str) {
        uint(out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }

    /// A length-prefixed message.
    pub fn message(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        uint(&mut out, payload.len() as u64);
        out.extend_from_slice(payload);
        out
    }

    pub const INT: i64 = 2;
    pub const UINT: i64 = 3;
    pub const STRING: i64 = 6;

    /// The definition of struct type `id` with the given fields (name, type id).
    pub fn struct_def(id: i64, name: &str, fields: &[(&str, i64)]) -> Vec<u8> {
        let mut out = Vec::new();
        int(&mut out, -id);
        out.extend_from_slice(&[0x03, 0x01, 0x01]); // wireType.StructT, CommonType, Name
        string(&mut out, name);
        uint(&mut out, 1); // CommonType.Id
        int(&mut out, id);
        uint(&mut out, 0);
        uint(&mut out, 1); // structType.Field
        uint(&mut out, fields.len() as u64);
        for (field, field_id) in fields {
            uint(&mut out, 1);
            string(&mut out, field);
            uint(&mut out, 1);
            int(&mut out, *field_id);
            uint(&mut out, 0);
        }
        out.extend_from_slice(&[0x00, 0x00]);
        message(&out)
    }

    /// The definition of slice type `id` of elements of type `elem`.
    pub fn slice_def(id: i64, elem: i64) -> Vec<u8> {
        let mut out = Vec::new();
        int(&mut out, -id);
        out.extend_from_slice(&[0x02, 0x01, 0x02]); // wireType.SliceT, CommonType, Id
        int(&mut out, id);
        uint(&mut out, 0);
        uint(&mut out, 1); // sliceType.Elem
        int(&mut out, elem);
        out.extend_from_slice(&[0x00, 0x00]);
        message(&out)
    }

    /// The request header type, as id 65, and a header value for `method` and `seq`.
    pub fn header(method: &str, seq: u64) -> Vec<u8> {
        let mut out = struct_def(65, "Request", &[("ServiceMethod", STRING), ("Seq", UINT)]);
        out.extend(header_value(method, seq));
        out
    }

    /// A header value, once type 65 is defined.
    pub fn header_value(method: &str, seq: u64) -> Vec<u8> {
        let mut value = Vec::new();
        int(&mut value, 65);
        uint(&mut value, 1);
        string(&mut value, method);
        if seq != 0 {
            uint(&mut value, 1);
            uint(&mut value, seq);
        }
        uint(&mut value, 0);
        message(&value)
    }
}

/// Reads requests until the reader says why it cannot go on, and how many it read.
fn read_all(bytes: &[u8], limits: Limits) -> (usize, ReadError) {
    let mut reader = ServerReader::new(bytes, limits);
    futures::executor::block_on(async {
        let mut requests = 0;
        loop {
            match reader.read_request().await {
                Ok(_) => requests += 1,
                Err(error) => return (requests, error),
            }
        }
    })
}

fn read_one(bytes: &[u8], limits: Limits) -> Result<Request, ReadError> {
    futures::executor::block_on(ServerReader::new(bytes, limits).read_request())
}

/// A call whose argument struct (type 66) has the given fields and field bytes.
fn call_with_body(fields: &[(&str, i64)], body_fields: &[u8]) -> Vec<u8> {
    let mut out = gob::header("Broker.CreateChannel", 1);
    out.extend(gob::struct_def(66, "ChannelRequest", fields));
    let mut value = Vec::new();
    gob::int(&mut value, 66);
    value.extend_from_slice(body_fields);
    out.extend(gob::message(&value));
    out
}

fn body_of(request: Request) -> netrpc::Struct {
    match request.body {
        Value::Struct(body) => body,
        other => panic!("a struct body, not {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_end_within_their_length(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let (requests, _) = read_all(&bytes, Limits::default());
        // Every request takes bytes, so a reader that loops on nothing would fail here.
        prop_assert!(requests <= bytes.len());
    }

    #[test]
    fn arbitrary_messages_after_a_valid_header_never_panic(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 1..8),
    ) {
        // Well-framed messages reach the decoder instead of stopping at the framing.
        let mut bytes = gob::header("Broker.Publish", 3);
        bytes.extend(gob::struct_def(66, "PublishRequest", &[("Topic", gob::STRING), ("Pair", 67)]));
        bytes.extend(gob::struct_def(67, "Pair", &[("X", gob::INT), ("Y", gob::INT)]));
        for payload in &payloads {
            bytes.extend(gob::message(payload));
        }
        let (requests, _) = read_all(&bytes, Limits::default());
        prop_assert!(requests <= payloads.len());
    }

    #[test]
    fn arbitrary_field_bytes_of_a_known_struct_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let fields = [("Topic", gob::STRING), ("Buffer", gob::INT), ("Tags", 67), ("Next", 66)];
        let mut bytes = gob::slice_def(67, gob::STRING);
        bytes.extend(call_with_body(&fields, &body));
        let _ = read_all(&bytes, Limits::default());
    }
}

#[tokio::test]
async fn a_huge_length_prefix_is_refused_before_the_message_arrives() {
    let (mut peer, ours) = tokio::io::duplex(64);
    // Eight bytes of length: 2^63. The peer then sends nothing more and stays connected, so
    // a reader that waited for (or allocated) the message would never answer.
    peer.write_all(&[0xF8, 0x80, 0, 0, 0, 0, 0, 0, 0])
        .await
        .expect("written");
    let mut reader = ServerReader::new(ours, Limits::default());
    let result = tokio::time::timeout(Duration::from_secs(5), reader.read_request())
        .await
        .expect("refused at once");
    assert!(
        matches!(result, Err(ReadError::TooLarge { size, limit }) if size == 1 << 63 && limit == 64 * 1024),
        "{result:?}"
    );
}

#[test]
fn a_message_of_exactly_the_limit_is_read_and_one_byte_more_is_refused() {
    let header = gob::header("Broker.Publish", 0);
    let longest = gob::struct_def(
        65,
        "Request",
        &[("ServiceMethod", gob::STRING), ("Seq", gob::UINT)],
    )
    .len()
        - 1;
    let mut bytes = header.clone();
    bytes.extend(gob::message(&[0x0c, 0x00, 0x01, b'x'])); // a string body: "x"
    let at_limit = Limits {
        max_message_bytes: longest,
        ..Limits::default()
    };
    let request = read_one(&bytes, at_limit).expect("every message is within the limit");
    assert_eq!(request.body, Value::String("x".into()));
    let below = Limits {
        max_message_bytes: longest - 1,
        ..Limits::default()
    };
    assert!(matches!(
        read_one(&bytes, below),
        Err(ReadError::TooLarge { size, .. }) if size as usize == longest
    ));
}

#[test]
fn type_definitions_up_to_the_limit_are_kept_and_one_more_is_refused() {
    let limit = Limits::default().max_type_definitions;
    // The header type and `limit - 1` more: exactly the limit, then a call using the last.
    let mut bytes = gob::struct_def(
        65,
        "Request",
        &[("ServiceMethod", gob::STRING), ("Seq", gob::UINT)],
    );
    let last = 65 + limit as i64 - 1;
    for id in 66..=last {
        bytes.extend(gob::struct_def(id, "Filler", &[("A", gob::INT)]));
    }
    bytes.extend(gob::header_value("Broker.Publish", 1));
    let mut value = Vec::new();
    gob::int(&mut value, last);
    value.extend_from_slice(&[0x01, 0x0e, 0x00]); // A: 7
    bytes.extend(gob::message(&value));
    let request = read_one(&bytes, Limits::default()).expect("the limit itself is allowed");
    assert_eq!(body_of(request).int("A"), Ok(7));

    let mut flood = gob::struct_def(
        65,
        "Request",
        &[("ServiceMethod", gob::STRING), ("Seq", gob::UINT)],
    );
    for id in 66..=last + 1 {
        flood.extend(gob::struct_def(id, "Filler", &[("A", gob::INT)]));
    }
    let (requests, error) = read_all(&flood, Limits::default());
    assert_eq!(requests, 0);
    assert!(
        matches!(error, ReadError::TooManyTypes { limit: l } if l == limit),
        "{error:?}"
    );
}

#[test]
fn a_type_defined_twice_is_malformed() {
    let mut bytes = gob::header("Broker.Publish", 1);
    bytes.extend(gob::struct_def(65, "Again", &[("A", gob::INT)]));
    let (_, error) = read_all(&bytes, Limits::default());
    assert!(
        matches!(error, ReadError::Malformed(Malformed::DuplicateType(65))),
        "{error:?}"
    );
}

/// A body of struct type 66 `{Next 66}` nested `depth` deep: the top level and `depth - 1`
/// structs inside it.
fn nested_structs(depth: usize) -> Vec<u8> {
    let mut fields = vec![0x01; depth - 1];
    fields.extend(vec![0x00; depth]);
    call_with_body(&[("Next", 66)], &fields)
}

/// A body whose field `Deep` is a slice of slices (type 67 `[]67`) nested `depth` deep,
/// counting the struct around it: read and skipped, but not without a bound.
fn nested_slices(depth: usize) -> Vec<u8> {
    let mut fields = vec![0x01];
    fields.extend(vec![0x01; depth - 2]); // each slice holds one slice...
    fields.push(0x00); // ...down to an empty one
    fields.push(0x00);
    let mut bytes = gob::slice_def(67, 67);
    bytes.extend(call_with_body(&[("Deep", 67)], &fields));
    bytes
}

#[test]
fn values_nested_to_the_limit_are_read_and_deeper_ones_refused() {
    let limit = Limits::default().max_nesting;
    for nested in [nested_structs, nested_slices] {
        let request =
            read_one(&nested(limit), Limits::default()).expect("the limit itself is allowed");
        assert_eq!(request.seq, 1);
        let result = read_one(&nested(limit + 1), Limits::default());
        assert!(
            matches!(result, Err(ReadError::TooDeep { limit: l }) if l == limit),
            "{result:?}"
        );
    }
}

#[test]
fn huge_counts_inside_a_message_are_refused_without_allocating() {
    // A string announcing 2^64 - 1 bytes with three present.
    let mut topic = vec![0x01];
    gob::uint(&mut topic, u64::MAX);
    topic.extend_from_slice(b"abc");
    let result = read_one(
        &call_with_body(&[("Topic", gob::STRING)], &topic),
        Limits::default(),
    );
    assert!(
        matches!(
            result,
            Err(ReadError::Malformed(Malformed::LengthPastEnd {
                length: u64::MAX,
                remaining: 3
            }))
        ),
        "{result:?}"
    );
    // A slice announcing 2^64 - 1 strings with three present: read until they run out.
    let mut tags = vec![0x01];
    gob::uint(&mut tags, u64::MAX);
    tags.extend_from_slice(&[0x01, b'a', 0x01, b'b', 0x01, b'c']);
    let mut bytes = gob::slice_def(67, gob::STRING);
    bytes.extend(call_with_body(&[("Tags", 67)], &tags));
    let result = read_one(&bytes, Limits::default());
    assert!(
        matches!(result, Err(ReadError::Malformed(Malformed::Truncated))),
        "{result:?}"
    );
}

#[test]
fn a_topic_sent_as_an_int_is_a_typed_error_from_the_accessor() {
    // ChannelRequest{Topic int; Buffer string}: Topic 7, Buffer "ten".
    let body = [0x01, 0x0e, 0x01, 0x03, b't', b'e', b'n', 0x00];
    let request = read_one(
        &call_with_body(&[("Topic", gob::INT), ("Buffer", gob::STRING)], &body),
        Limits::default(),
    )
    .expect("well-formed gob, whatever the field types");
    let body = body_of(request);
    assert_eq!(
        body.string("Topic"),
        Err(FieldError::WrongKind {
            field: "Topic".into(),
            expected: "string",
            found: "int"
        })
    );
    assert_eq!(
        body.int("Buffer"),
        Err(FieldError::WrongKind {
            field: "Buffer".into(),
            expected: "int",
            found: "string"
        })
    );
    assert!(matches!(
        body.struct_("Topic"),
        Err(FieldError::WrongKind { .. })
    ));
}

#[test]
fn an_unsigned_integer_too_large_for_an_int_is_out_of_range() {
    let mut body = vec![0x01];
    gob::uint(&mut body, u64::MAX);
    body.push(0x00);
    let request = read_one(
        &call_with_body(&[("Buffer", gob::UINT)], &body),
        Limits::default(),
    )
    .expect("a call");
    assert_eq!(
        body_of(request).int("Buffer"),
        Err(FieldError::OutOfRange {
            field: "Buffer".into(),
            expected: "int"
        })
    );
}

#[test]
fn a_header_of_the_wrong_shape_is_malformed() {
    // ServiceMethod as an int.
    let mut bytes = gob::struct_def(
        65,
        "Request",
        &[("ServiceMethod", gob::INT), ("Seq", gob::UINT)],
    );
    bytes.extend(gob::message(&[0xff, 0x82, 0x01, 0x02, 0x00]));
    let result = read_one(&bytes, Limits::default());
    assert!(
        matches!(result, Err(ReadError::Malformed(Malformed::Header(_)))),
        "{result:?}"
    );
}

#[test]
fn the_stream_ending_between_calls_is_closed_and_inside_one_is_an_error() {
    assert!(matches!(
        read_one(&[], Limits::default()),
        Err(ReadError::Closed)
    ));
    let header = gob::header("Broker.Publish", 1);
    let result = read_one(&header, Limits::default());
    assert!(
        matches!(result, Err(ReadError::Io(ref error)) if error.kind() == std::io::ErrorKind::UnexpectedEof),
        "{result:?}"
    );
    let result = read_one(&header[..header.len() - 1], Limits::default());
    assert!(
        matches!(result, Err(ReadError::Io(ref error)) if error.kind() == std::io::ErrorKind::UnexpectedEof),
        "{result:?}"
    );
}
