//! tarpc over TCP, set up the same way by every pairbroker program.
//!
//! - [`framed`]: a bincode transport over one TCP stream, with [`MAX_FRAME_LENGTH`] on both ends,
//!   whose flushes are [`coalesce`]d.
//! - [`connect_broker`]: dial with a deadline and return a tarpc client.
//! - [`accept`]: accept connections until shutdown and hand each to a connection handler;
//!   [`accept_or`] hands those that open with another protocol to a second one.
//! - [`Admission`]: how many connections a server holds, in their handshake and after it.
//! - [`link`]: a connection to the broker that reconnects by itself.
//! - [`retry`]: the one policy by which clients try again what failed for now.
//! - [`handshake`]: the protocol check and access token that open every connection.
//! - [`starting`]: the answer "not ready yet" to clients of a server still opening its store.
//! - [`tls`]: TLS under the handshake, the files it is loaded from, and [`Stream`], a
//!   connection in TLS or plain TCP.
//! - [`words`]: a failed call and a duration in our words.

mod admission;
pub mod coalesce;
pub mod handshake;
pub mod link;
pub mod retry;
pub mod starting;
pub mod tls;
pub mod words;

pub use admission::{
    Admission, DEFAULT_HANDSHAKE_DEADLINE, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_MAX_HANDSHAKING, DEFAULT_MAX_HANDSHAKING_PER_IP, DEFAULT_MAX_REQUESTS_PER_CONNECTION,
};
pub use coalesce::Coalescing;
pub use handshake::{AccessToken, Greeting, HandshakeError};
pub use link::{BrokerLink, LinkConfig, LinkError};
pub use tls::{ClientTls, ServerTls, Stream, TlsError, TlsFiles};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use stubs::BrokerClient;
use tarpc::serde_transport::Transport;
use tarpc::tokio_serde::formats::Bincode;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The largest frame either end accepts. Requests are under a kilobyte; the largest replies,
/// `stats` for the most topics a broker allows (4,096) and `dead_letters` for the longest list
/// (10,000), stay under it. The cap stops a length header from a broken or hostile peer from
/// making us reserve more than this per connection.
pub const MAX_FRAME_LENGTH: usize = 2 * 1024 * 1024;

/// How long a program waits for a TCP connection to the broker or to a factory by default.
/// Loopback and LAN connections take microseconds; seconds mean nobody is listening.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A tarpc transport over TCP (in TLS or not) with bincode messages, flushes coalesced.
pub type TcpTransport<Item, SinkItem> =
    Coalescing<Transport<Stream, Item, SinkItem, Bincode<Item, SinkItem>>>;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address did not resolve to any socket address.
    #[error("cannot resolve {address}: {source}")]
    Resolve {
        /// The address given.
        address: String,
        /// What the resolver said.
        source: std::io::Error,
    },
    /// The connection was refused or failed.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address dialled.
        address: String,
        /// What the socket said.
        source: std::io::Error,
    },
    /// The server did not accept our handshake (wrong token, or not a pairbroker server).
    #[error("{address} refused the connection: {source}")]
    Handshake {
        /// The address dialled.
        address: String,
        /// What went wrong.
        source: HandshakeError,
    },
    /// A dial over TLS found a server that does not speak it.
    #[error("{address} did not answer TLS (was it started without --tls-cert or --tls-dir?)")]
    NoTls {
        /// The address dialled.
        address: String,
    },
    /// The server's certificate was refused.
    #[error("cannot connect to {address} over TLS: {reason}")]
    Certificate {
        /// The address dialled.
        address: String,
        /// Why, in a sentence about "its certificate".
        reason: String,
    },
    /// Nobody answered within the connect timeout.
    #[error("cannot connect to {address}: no answer within {timeout:?}")]
    TimedOut {
        /// The address dialled.
        address: String,
        /// How long we waited.
        timeout: Duration,
    },
}

impl ConnectError {
    /// The address that could not be reached.
    pub fn address(&self) -> &str {
        match self {
            ConnectError::Resolve { address, .. }
            | ConnectError::Connect { address, .. }
            | ConnectError::Handshake { address, .. }
            | ConnectError::NoTls { address }
            | ConnectError::Certificate { address, .. }
            | ConnectError::TimedOut { address, .. } => address,
        }
    }

    /// Why, in a few words: `connection refused`, `no answer within 3s`, ...
    pub fn cause(&self) -> String {
        match self {
            ConnectError::Resolve { source, .. } => format!("cannot resolve it: {source}"),
            ConnectError::Connect { source, .. } => source.kind().to_string(),
            ConnectError::Handshake { source, .. } => source.to_string(),
            ConnectError::NoTls { .. } => {
                "it did not answer TLS: was it started without --tls-cert or --tls-dir?".to_owned()
            }
            ConnectError::Certificate { reason, .. } => reason.clone(),
            ConnectError::TimedOut { timeout, .. } => {
                format!("no answer within {}", words::Rounded(*timeout))
            }
        }
    }

    /// Whether a broker that could not be reached may yet come: nobody listening yet, a broker
    /// still opening its store, or no answer in time. A name that does not resolve, a refused
    /// token or a disagreement about TLS will not mend by waiting.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Resolve { .. }
            | ConnectError::NoTls { .. }
            | ConnectError::Certificate { .. } => false,
            ConnectError::Connect { .. } | ConnectError::TimedOut { .. } => true,
            ConnectError::Handshake { source, .. } => matches!(
                source,
                HandshakeError::NotReady | HandshakeError::TimedOut | HandshakeError::Io(_)
            ),
        }
    }
}

/// Wraps one connection, in TLS or plain TCP, into a length-delimited bincode transport.
pub fn framed<Item, SinkItem>(stream: impl Into<Stream>) -> TcpTransport<Item, SinkItem>
where
    Item: DeserializeOwned,
    SinkItem: Serialize,
{
    let stream = stream.into();
    // Small request/reply messages: without NODELAY, Nagle's algorithm holds each reply
    // back until the previous one is acknowledged, which adds up to 40 ms per call.
    if let Err(error) = stream.tcp().set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {error}");
    }
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_LENGTH)
        .new_codec();
    Coalescing::new(tarpc::serde_transport::new(
        Framed::new(stream, codec),
        Bincode::default(),
    ))
}

/// Resolves `address` (`host:port`) to its first socket address.
pub async fn resolve(address: &str) -> Result<SocketAddr, ConnectError> {
    let mut addresses =
        tokio::net::lookup_host(address)
            .await
            .map_err(|source| ConnectError::Resolve {
                address: address.to_owned(),
                source,
            })?;
    addresses.next().ok_or_else(|| ConnectError::Resolve {
        address: address.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address found"),
    })
}

/// Opens a TCP connection to `address`, giving up after `timeout`; with `tls`, takes the TLS
/// handshake on it; then offers `token` in the pairbroker handshake.
pub async fn dial(
    address: &str,
    timeout: Duration,
    token: &AccessToken,
    tls: Option<&ClientTls>,
) -> Result<Stream, ConnectError> {
    let socket_address = resolve(address).await?;
    match tokio::time::timeout(timeout, TcpStream::connect(socket_address)).await {
        Ok(Ok(tcp)) => {
            let mut stream = match tls {
                Some(tls) => tls.connect(address, tcp).await?,
                None => Stream::Plain(tcp),
            };
            handshake::offer(&mut stream, token)
                .await
                .map_err(|source| ConnectError::Handshake {
                    address: address.to_owned(),
                    source,
                })?;
            Ok(stream)
        }
        Ok(Err(source)) => Err(ConnectError::Connect {
            address: address.to_owned(),
            source,
        }),
        Err(_) => Err(ConnectError::TimedOut {
            address: address.to_owned(),
            timeout,
        }),
    }
}

/// Connects to a broker at `address` (`host:port`), over TLS with `tls`.
pub async fn connect_broker(
    address: &str,
    timeout: Duration,
    token: &AccessToken,
    tls: Option<&ClientTls>,
) -> Result<BrokerClient, ConnectError> {
    let stream = dial(address, timeout, token, tls).await?;
    Ok(BrokerClient::new(tarpc::client::Config::default(), framed(stream)).spawn())
}

/// Accepts connections on `listener` until `shutdown` is cancelled. Each connection runs in its
/// own task on `tracker` (so that the caller can wait for open connections to finish): first
/// TLS if `admission` has it, then the handshake, then `handle`. The limits of `admission`
/// apply as [`Admission`] tells: a connection still in its handshake (TLS's included) may be
/// closed to make room for a newer one from its address, and a client that completes its
/// handshake beyond the established limits is refused, told why
/// ([`HandshakeError::TooManyConnections`]).
///
/// An accept error (e.g. too many open files) is logged and accepting goes on after a short
/// pause, rather than ending the server.
pub async fn accept<H, F>(
    listener: TcpListener,
    admission: Admission,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    handle: H,
) where
    H: Fn(Stream, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    accept_or(listener, admission, shutdown, tracker, handle, None).await
}

/// A server for connections that do not open with a pairbroker handshake: it gets the stream,
/// the bytes already read from it, and the peer's address.
pub type OtherProtocol = Arc<
    dyn Fn(TcpStream, Vec<u8>, SocketAddr) -> futures::future::BoxFuture<'static, ()> + Send + Sync,
>;

/// [`accept`], with the connections whose first bytes are not a pairbroker handshake handed to
/// `other` instead of closed. Another protocol has no place for the access token, so with a
/// token set they are closed, with a line in the log that says why; nor for TLS, so with TLS
/// `other` is never called.
pub async fn accept_or<H, F>(
    listener: TcpListener,
    admission: Admission,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    handle: H,
    other: Option<OtherProtocol>,
) where
    H: Fn(Stream, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let other = other.filter(|_| admission.tls.is_none());
    /// How long to wait before accepting again after an accept error, so that a persistent
    /// error (out of file descriptors) does not spin a core.
    const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
    let gate = admission::Gate::new(&admission);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("accepting a connection failed: {error}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Cancelled when the server stops, or to make room for a newer connection.
        let close = shutdown.child_token();
        let handshaking = gate.arrive(peer, close.clone());
        tracker.spawn(greet_and_handle(
            stream,
            peer,
            Welcome {
                gate: gate.clone(),
                token: admission.token.clone(),
                tls: admission.tls.clone(),
                deadline: admission.handshake_deadline,
                other: other.clone(),
            },
            handshaking,
            close,
            handle.clone(),
        ));
        // Let the new connection read the handshake its client has likely sent already, before
        // more arrivals from its address can make it the oldest and close it: under a flood of
        // connections the accept loop would otherwise run for many accepts in a row.
        tokio::task::yield_now().await;
    }
}

/// What a connection task needs to know to greet its peer.
struct Welcome {
    gate: admission::Gate,
    token: AccessToken,
    tls: Option<ServerTls>,
    deadline: Duration,
    other: Option<OtherProtocol>,
}

/// The connection from `peer` in TLS if the server has it (`tls`), or as it is; `None` once
/// it is closed: a refused or late TLS handshake (said in the log), or `close`.
async fn open_tls(
    tcp: TcpStream,
    tls: Option<ServerTls>,
    peer: SocketAddr,
    deadline: Duration,
    close: &CancellationToken,
) -> Option<Stream> {
    let Some(tls) = tls else {
        return Some(Stream::Plain(tcp));
    };
    // TLS is part of the handshake: it has the same deadline and gives way alike.
    let accepted = tokio::select! {
        _ = close.cancelled() => return None,
        accepted = tokio::time::timeout(deadline, tls.accept(tcp)) => accepted,
    };
    match accepted {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(refusal @ (tls::TlsRefusal::PlaintextPairbroker | tls::TlsRefusal::NotTls))) => {
            tracing::warn!("refused {refusal} at {peer}: this server requires TLS");
        }
        Ok(Err(refusal)) => tracing::info!("closed the connection from {peer}: {refusal}"),
        Err(_) => tracing::debug!(
            "closed the connection from {peer}: no TLS handshake within {}",
            words::Rounded(deadline)
        ),
    }
    None
}

/// One connection's life: TLS if the server has it, its handshake, unless `close` ends them
/// first, then its handler.
async fn greet_and_handle<H, F>(
    tcp: TcpStream,
    peer: SocketAddr,
    welcome: Welcome,
    handshaking: admission::Handshaking,
    close: CancellationToken,
    handle: H,
) where
    H: Fn(Stream, SocketAddr) -> F,
    F: Future<Output = ()>,
{
    let Welcome {
        gate,
        token,
        tls,
        deadline,
        other,
    } = welcome;
    let started = tokio::time::Instant::now();
    let Some(mut stream) = open_tls(tcp, tls, peer, deadline, &close).await else {
        return;
    };
    // The handshaking place is given back as the established one is taken, so that the
    // connection is never counted as both, nor as neither.
    let room = move || {
        drop(handshaking);
        gate.establish(peer)
    };
    let left = deadline.saturating_sub(started.elapsed());
    let greeting = handshake::greet_if_room(&mut stream, &token, other.is_some(), left, room);
    let greeted = tokio::select! {
        // A handshake that can finish now is finished, even when its place is wanted: either
        // way it leaves the handshaking connections, and this way a client is not turned away.
        biased;
        greeted = greeting => greeted,
        // The server stops, or a newer connection from this address needed the place.
        _ = close.cancelled() => return,
    };
    match (greeted, other) {
        (Ok((Greeting::Pairbroker, _established)), _) => {
            tracing::debug!("accepted a connection from {peer}");
            handle(stream, peer).await;
        }
        (Ok((Greeting::Other(_), _)), Some(_)) if token.is_set() => tracing::warn!(
            "refused a client at {peer} that is not pairbroker's (Go's net/rpc?): this server \
             has an access token, and such a client cannot give one"
        ),
        (Ok((Greeting::Other(read), _established)), Some(other)) => {
            // Only a server without TLS has `other` (see `accept_or`).
            if let Stream::Plain(tcp) = stream {
                other(tcp, read, peer).await
            }
        }
        (Ok((Greeting::Other(_), _)), None) => {}
        // Logged when the place was refused.
        (Err(HandshakeError::TooManyConnections), _) => {}
        (Err(HandshakeError::TlsClient), _) => tracing::warn!(
            "refused a TLS client at {peer}: this server has no TLS (start it with --tls-cert \
             and --tls-key, or --tls-dir)"
        ),
        (Err(HandshakeError::TimedOut), _) => tracing::debug!(
            "closed the connection from {peer}: no handshake within {}",
            words::Rounded(deadline)
        ),
        (Err(error), _) => {
            tracing::debug!("closed the connection from {peer}: the handshake failed: {error}")
        }
    }
}
