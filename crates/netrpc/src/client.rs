//! The client's side of a net/rpc connection: calls to a Go server, several in flight on one
//! connection. One task writes the calls in turn, another reads the replies and hands each to
//! the caller waiting for its `Seq`, as Go's own client does.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::encode::GobEncoder;
use crate::error::ReadError;
use crate::header;
use crate::limits::Limits;
use crate::reader::GobReader;
use crate::record::Record;
use crate::value::{Struct, Value};

/// How many calls may wait for the writer task. Callers beyond it wait their turn; the lab
/// keeps a few calls in flight per connection, so the queue is only full when the socket is.
pub const OUTGOING_QUEUE: usize = 64;

/// Why a call did not return a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The method ran and returned this error. The connection is fine.
    #[error("the remote method failed: {0}")]
    Remote(String),
    /// The connection failed (refused, lost, or a reply that could not be read), or the
    /// reply was not a struct. When the connection fails, every pending and later call on it
    /// gets this.
    #[error("the connection failed: {0}")]
    Transport(String),
    /// No reply came within the call's timeout. The connection is fine; a late reply is
    /// read and dropped.
    #[error("no reply in time")]
    TimedOut,
}

/// A connection to a Go net/rpc server. Cheap to clone; the connection closes when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Outgoing>,
    /// Cancelled once the connection has failed (see [`Client::closed`]).
    closed: CancellationToken,
    /// Stops both tasks when the last client handle goes.
    _closing: DropGuard,
}

/// What the caller, the reader task and the writer task share. A blocking mutex, not tokio's:
/// it is held only to look up or change the map, never across an await. The state stays
/// consistent at every step, so parking_lot's, which a panic cannot poison, fits.
struct Shared {
    state: Mutex<State>,
}

struct State {
    next_seq: u64,
    pending: HashMap<u64, oneshot::Sender<Result<Struct, CallError>>>,
    /// Why the connection failed, once it has.
    failure: Option<String>,
}

struct Outgoing {
    seq: u64,
    service_method: String,
    args: Record,
}

impl Client {
    /// Dials `addr` over plain TCP, as Go's `rpc.Dial("tcp", addr)` does, with default
    /// [`Limits`] on the replies.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        Client::connect_with_limits(addr, timeout, Limits::default()).await
    }

    /// Dials `addr` over plain TCP with the given limits on the replies.
    pub async fn connect_with_limits(
        addr: SocketAddr,
        timeout: Duration,
        limits: Limits,
    ) -> io::Result<Client> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection to {addr} within {timeout:?}"),
                )
            })??;
        // Calls are small and each waits for its reply: send them at once.
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        Ok(Client::new(reader, writer, limits))
    }

    /// A client over an established connection. Spawns its reader and writer tasks, so it
    /// must be called within a tokio runtime.
    pub fn new<R, W>(reader: R, writer: W, limits: Limits) -> Client
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_seq: 0,
                pending: HashMap::new(),
                failure: None,
            }),
        });
        let closing = CancellationToken::new();
        let (outgoing, calls) = mpsc::channel(OUTGOING_QUEUE);
        tokio::spawn(read_replies(
            GobReader::new(reader, limits),
            Arc::clone(&shared),
            closing.clone(),
        ));
        tokio::spawn(write_calls(
            writer,
            calls,
            Arc::clone(&shared),
            closing.clone(),
        ));
        Client {
            inner: Arc::new(Inner {
                shared,
                outgoing,
                closed: closing.clone(),
                _closing: closing.drop_guard(),
            }),
        }
    }

    /// Calls `service_method` (e.g. `Factory.Multiply`) with `args` and waits up to
    /// `timeout` for the result.
    ///
    /// Cancel-safe: dropping the future forgets the call; the connection and the other calls
    /// carry on, and a late reply is read and dropped.
    pub async fn call(
        &self,
        service_method: &str,
        args: Record,
        timeout: Duration,
    ) -> Result<Struct, CallError> {
        let shared = &self.inner.shared;
        let (reply, replied) = oneshot::channel();
        let seq = {
            let mut state = shared.state.lock();
            if let Some(failure) = &state.failure {
                return Err(CallError::Transport(failure.clone()));
            }
            let seq = state.next_seq;
            state.next_seq = state.next_seq.wrapping_add(1);
            state.pending.insert(seq, reply);
            seq
        };
        let _forget = Forget { shared, seq };
        let exchange = async {
            let call = Outgoing {
                seq,
                service_method: service_method.to_owned(),
                args,
            };
            if self.inner.outgoing.send(call).await.is_err() {
                return Err(shared.transport_error());
            }
            replied
                .await
                .unwrap_or_else(|_| Err(shared.transport_error()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(CallError::TimedOut))
    }

    /// Whether the connection has failed: every call on it now fails with
    /// [`CallError::Transport`], and a new connection is needed.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.state.lock().failure.is_some()
    }

    /// Waits until the connection has failed (the server closed it, or reading or writing
    /// failed), as [`Client::is_closed`] then says: for a caller that holds a connection
    /// between calls and must learn of its end without making one.
    pub async fn closed(&self) {
        // Both tasks mark the connection failed before they cancel this; the only other
        // canceller is the last handle's drop, which no waiter outlives.
        self.inner.closed.cancelled().await
    }
}

/// Removes a call from the pending map when its caller stops waiting, for whatever reason.
struct Forget<'a> {
    shared: &'a Shared,
    seq: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.state.lock().pending.remove(&self.seq);
    }
}

impl Shared {
    fn transport_error(&self) -> CallError {
        let failure = self.state.lock().failure.clone();
        CallError::Transport(failure.unwrap_or_else(|| "the connection closed".to_owned()))
    }

    /// Marks the connection failed and fails every pending call with the first reason.
    fn fail(&self, reason: String) {
        let mut state = self.state.lock();
        let reason = state.failure.get_or_insert(reason).clone();
        for (_, waiter) in state.pending.drain() {
            // A caller that stopped waiting no longer cares.
            let _ = waiter.send(Err(CallError::Transport(reason.clone())));
        }
    }
}

async fn read_replies<R: AsyncRead + Unpin>(
    mut stream: GobReader<R>,
    shared: Arc<Shared>,
    closing: CancellationToken,
) {
    let reason = tokio::select! {
        reason = route_replies(&mut stream, &shared) => reason,
        _ = closing.cancelled() => "the client was dropped".to_owned(),
    };
    shared.fail(reason);
    closing.cancel();
}

/// Hands each reply to the call waiting for its `Seq`, until the stream fails; returns why.
async fn route_replies<R: AsyncRead + Unpin>(stream: &mut GobReader<R>, shared: &Shared) -> String {
    loop {
        let header = match stream.read_value().await {
            Ok(Some(header)) => header,
            Ok(None) => return "the server closed the connection".to_owned(),
            Err(error) => return error.to_string(),
        };
        let header = match header::parse_response(header) {
            Ok(header) => header,
            Err(malformed) => return ReadError::from(malformed).to_string(),
        };
        // The body is read even when nobody waits for it, to stay in step with the stream.
        let body = match stream.read_value().await {
            Ok(Some(body)) => body,
            Ok(None) => return "the server closed the connection inside a reply".to_owned(),
            Err(error) => return error.to_string(),
        };
        let outcome = if !header.error.is_empty() {
            Err(CallError::Remote(header.error))
        } else {
            match body {
                Value::Struct(result) => Ok(result),
                other => Err(CallError::Transport(format!(
                    "the reply is a {}, not a struct",
                    other.kind()
                ))),
            }
        };
        let waiter = shared.state.lock().pending.remove(&header.seq);
        if let Some(waiter) = waiter {
            let _ = waiter.send(outcome);
        }
    }
}

async fn write_calls<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut calls: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    closing: CancellationToken,
) {
    let mut encoder = GobEncoder::new();
    let failure = tokio::select! {
        failure = async {
            while let Some(call) = calls.recv().await {
                let mut out = Vec::new();
                encoder.encode(&header::request(call.seq, &call.service_method), &mut out);
                encoder.encode(&call.args, &mut out);
                if let Err(error) = write_flushed(&mut writer, &out).await {
                    return Some(format!("writing to the server: {error}"));
                }
            }
            None
        } => failure,
        _ = closing.cancelled() => None,
    };
    if let Some(failure) = failure {
        shared.fail(failure);
        closing.cancel();
    }
    // Tell the server we are done, so that it closes its side too.
    let _ = writer.shutdown().await;
}

async fn write_flushed<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long the test waits for `closed` once the server has gone; it returns at once.
    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn closed_waits_while_the_connection_is_open_and_returns_once_the_server_closes_it() {
        let (ours, server) = tokio::io::duplex(1024);
        let (reader, writer) = tokio::io::split(ours);
        let client = Client::new(reader, writer, Limits::default());
        let mut closed = std::pin::pin!(client.closed());

        // The reader task runs meanwhile and finds nothing to read.
        tokio::task::yield_now().await;
        assert!(futures::poll!(closed.as_mut()).is_pending());
        assert!(!client.is_closed());

        drop(server);
        tokio::time::timeout(WAIT, closed)
            .await
            .expect("closed returns once the server has closed the connection");
        assert!(client.is_closed());
    }
}
