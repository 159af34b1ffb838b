//! The server's side of a net/rpc connection, split in two so that reading calls and writing
//! replies are independent: a connection handler reads calls in one task while one writer
//! task sends the replies of calls answered concurrently, in whatever order they finish.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::encode::GobEncoder;
use crate::error::ReadError;
use crate::header;
use crate::limits::Limits;
use crate::reader::GobReader;
use crate::record::Record;
use crate::value::Value;

/// Sent as the error of an error reply whose message is empty: Go's client treats an empty
/// `Error` as success, and would then read the empty body as the method's result.
pub const EMPTY_ERROR_MESSAGE: &str = "unspecified error";

/// A call read from a client.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// `Service.Method`, e.g. `Broker.Publish`.
    pub service_method: String,
    /// The client's number for the call, to be given back in the reply.
    pub seq: u64,
    /// The argument.
    pub body: Value,
}

/// Reads calls from a net/rpc client.
pub struct ServerReader<R> {
    stream: GobReader<R>,
}

impl<R: AsyncRead + Unpin> ServerReader<R> {
    /// Reads calls from `reader`, within `limits`.
    pub fn new(reader: R, limits: Limits) -> Self {
        ServerReader {
            stream: GobReader::new(reader, limits),
        }
    }

    /// Reads the next call: its header and its argument.
    ///
    /// [`ReadError::Closed`] when the client closed the connection between calls. Not
    /// cancel-safe: dropping the future part way loses the stream's place, so a handler that
    /// selects on it should close the connection when it drops it.
    pub async fn read_request(&mut self) -> Result<Request, ReadError> {
        let Some(header) = self.stream.read_value().await? else {
            return Err(ReadError::Closed);
        };
        let header = header::parse_request(header)?;
        let body = self.stream.read_value().await?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "a call without its argument")
        })?;
        Ok(Request {
            service_method: header.service_method,
            seq: header.seq,
            body,
        })
    }
}

/// Writes replies to a net/rpc client.
pub struct ServerWriter<W> {
    writer: W,
    encoder: GobEncoder,
}

impl<W: AsyncWrite + Unpin> ServerWriter<W> {
    /// Writes replies to `writer`.
    pub fn new(writer: W) -> Self {
        ServerWriter {
            writer,
            encoder: GobEncoder::new(),
        }
    }

    /// Writes the reply to call `seq`: its result, or an error message with an empty body as
    /// Go's server sends it. The reply is written whole and flushed.
    ///
    /// Not cancel-safe: dropping the future part way leaves half a reply on the stream, so
    /// keep this in a task of its own that finishes each write.
    pub async fn write_response(
        &mut self,
        seq: u64,
        service_method: &str,
        reply: Result<&Record, &str>,
    ) -> io::Result<()> {
        let mut out = Vec::new();
        match reply {
            Ok(result) => {
                self.encoder
                    .encode(&header::response(seq, service_method, ""), &mut out);
                self.encoder.encode(result, &mut out);
            }
            Err(message) => {
                let message = if message.is_empty() {
                    EMPTY_ERROR_MESSAGE
                } else {
                    message
                };
                self.encoder
                    .encode(&header::response(seq, service_method, message), &mut out);
                self.encoder.encode(&header::invalid_request(), &mut out);
            }
        }
        self.writer.write_all(&out).await?;
        self.writer.flush().await
    }

    /// The writer, to shut it down when the connection ends.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.writer
    }
}
