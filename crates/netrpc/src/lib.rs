//! Go's `net/rpc` with its default gob codec, the subset the lab's Go programs speak, bounded
//! against hostile input. It knows nothing of the broker: it reads and writes calls.
//!
//! On the wire, each direction of a connection is one gob stream. A call is a
//! `Request{ServiceMethod, Seq}` header and the argument; a reply is a
//! `Response{ServiceMethod, Seq, Error}` header and the result, or an empty struct when
//! `Error` is set. Calls overlap on a connection and replies are matched by `Seq`.
//!
//! - [`server`]: [`ServerReader`] reads calls and [`ServerWriter`] writes replies, on the two
//!   halves of a connection.
//! - [`client`]: [`Client`] calls a Go server, several calls in flight on one connection.
//! - [`value`]: [`Value`] and [`Struct`], what is read, with typed access to fields.
//! - [`record`]: [`StructType`] and [`Record`], what is sent.
//! - [`limits`]: [`Limits`], what a peer may ask of a reader.
//! - [`error`]: [`ReadError`] and [`Malformed`], why a stream could not be read.
//! - Inside: `wire` (gob's integers and strings), `types` (the types a peer defines),
//!   `decode` (a value from its messages), `reader` (messages from a socket), `encode`
//!   (type definitions and values to send) and `header` (net/rpc's headers).
#![deny(missing_docs)]

pub mod client;
pub mod error;
pub mod limits;
pub mod record;
pub mod server;
pub mod value;

mod decode;
mod encode;
mod header;
mod reader;
mod types;
mod wire;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod go_bytes;

pub use client::{CallError, Client};
pub use error::{Malformed, ReadError};
pub use limits::Limits;
pub use record::{BuildError, FieldKind, FieldType, FieldValue, Record, StructType};
pub use server::{Request, ServerReader, ServerWriter};
pub use value::{FieldError, OtherKind, Struct, Value};
