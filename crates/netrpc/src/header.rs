//! The headers net/rpc puts before every call and every reply.

use std::sync::LazyLock;

use crate::error::Malformed;
use crate::record::{FieldKind, FieldValue, Record, StructType};
use crate::value::{Struct, Value};

/// Go's `rpc.Request`, sent before each call's argument.
static REQUEST: LazyLock<StructType> = LazyLock::new(|| {
    StructType::new("Request")
        .field("ServiceMethod", FieldKind::String)
        .field("Seq", FieldKind::Uint)
});

/// Go's `rpc.Response`, sent before each reply's result.
static RESPONSE: LazyLock<StructType> = LazyLock::new(|| {
    StructType::new("Response")
        .field("ServiceMethod", FieldKind::String)
        .field("Seq", FieldKind::Uint)
        .field("Error", FieldKind::String)
});

/// Go's server sends `invalidRequest`, an anonymous `struct{}`, as the body of an error reply.
static INVALID_REQUEST: LazyLock<StructType> = LazyLock::new(|| StructType::new(""));

/// A call's header as read.
pub(crate) struct RequestHeader {
    pub(crate) service_method: String,
    pub(crate) seq: u64,
}

/// A reply's header as read.
pub(crate) struct ResponseHeader {
    pub(crate) seq: u64,
    pub(crate) error: String,
}

pub(crate) fn request(seq: u64, service_method: &str) -> Record {
    header(&REQUEST, [service_method.into(), seq.into()])
}

pub(crate) fn response(seq: u64, service_method: &str, error: &str) -> Record {
    header(&RESPONSE, [service_method.into(), seq.into(), error.into()])
}

pub(crate) fn invalid_request() -> Record {
    Record::new(&INVALID_REQUEST)
}

/// A header record. The values are given in field order and of each field's kind.
fn header<const N: usize>(ty: &StructType, values: [FieldValue; N]) -> Record {
    Record::from_field_values(ty, values.into_iter().map(Some).collect())
}

pub(crate) fn parse_request(value: Value) -> Result<RequestHeader, Malformed> {
    let header = expect_struct(value)?;
    Ok(RequestHeader {
        service_method: header.string("ServiceMethod").map_err(bad)?.to_owned(),
        seq: header.uint("Seq").map_err(bad)?,
    })
}

pub(crate) fn parse_response(value: Value) -> Result<ResponseHeader, Malformed> {
    let header = expect_struct(value)?;
    Ok(ResponseHeader {
        seq: header.uint("Seq").map_err(bad)?,
        error: header.string("Error").map_err(bad)?.to_owned(),
    })
}

fn expect_struct(value: Value) -> Result<Struct, Malformed> {
    match value {
        Value::Struct(header) => Ok(header),
        other => Err(Malformed::Header(format!(
            "a {}, not a struct",
            other.kind()
        ))),
    }
}

fn bad(error: impl std::fmt::Display) -> Malformed {
    Malformed::Header(error.to_string())
}
