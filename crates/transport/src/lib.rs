//! tarpc over TCP, set up the same way by every pairbroker program.
//!
//! - [`framed`]: a bincode transport over one TCP stream, with [`MAX_FRAME_LENGTH`] on both ends,
//!   whose flushes are [`coalesce`]d.
//! - [`connect_broker`] and [`connect_factory`]: dial with a deadline and return a tarpc client.
//! - [`accept`]: accept connections until shutdown and hand each to a connection handler;
//!   [`accept_or`] hands those that open with another protocol to a second one.
//! - [`link`]: a connection to the broker that reconnects by itself.
//! - [`handshake`]: the protocol check and access token that open every connection.
//! - [`tls`]: TLS under the handshake, the files it is loaded from, and [`Stream`], a
//!   connection in TLS or plain TCP.
//! - [`words`]: a failed call and a duration in our words.

pub mod coalesce;
pub mod handshake;
pub mod link;
pub mod tls;
pub mod words;

pub use coalesce::Coalescing;
pub use handshake::{AccessToken, Greeting, HandshakeError};
pub use link::{BrokerLink, LinkConfig, LinkError};
pub use tls::{ClientTls, ServerTls, Stream, TlsError, TlsFiles};

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use stubs::{BrokerClient, FactoryClient};
use tarpc::serde_transport::Transport;
use tarpc::tokio_serde::formats::Bincode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
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

/// Connects to a factory at `address` (`host:port`), over TLS with `tls`.
pub async fn connect_factory(
    address: &str,
    timeout: Duration,
    token: &AccessToken,
    tls: Option<&ClientTls>,
) -> Result<FactoryClient, ConnectError> {
    let stream = dial(address, timeout, token, tls).await?;
    Ok(FactoryClient::new(tarpc::client::Config::default(), framed(stream)).spawn())
}

/// How many connections a server holds at once by default. Each costs a task and two small
/// buffers; a thousand is far more than a lab needs and far less than the machine can hold.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
/// How many connections one IP address may hold at once by default, so that one misbehaving
/// host cannot take every slot.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// How many requests one connection may have in flight at once by default: a miner with 32
/// publishers needs 32; a client that never reads its replies is held to this many tasks.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: usize = 256;

/// Who may connect to a server, and how many at once.
#[derive(Clone, Debug)]
pub struct Admission {
    /// The token every client must offer; none admits every client.
    pub token: AccessToken,
    /// Connections held at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Connections held at once per IP address.
    pub max_connections_per_ip: usize,
    /// Requests in flight per connection; more are answered with an error.
    pub max_requests_per_connection: usize,
    /// TLS to require of every connection, before the handshake; none serves plain TCP.
    pub tls: Option<ServerTls>,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            token: AccessToken::none(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_requests_per_connection: DEFAULT_MAX_REQUESTS_PER_CONNECTION,
            tls: None,
        }
    }
}

/// A connection's place in its IP address's count, given back when dropped.
struct IpSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, limit: usize) -> Option<Self> {
        let mut map = counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = map.entry(ip).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Self {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` until `shutdown` is cancelled. Each connection within the
/// limits of `admission` runs in its own task on `tracker` (so that the caller can wait for
/// open connections to finish): first TLS if `admission` has it, then the handshake, then
/// `handle`. A connection over a limit
/// is closed at once, so that the clients within the limits are not held up.
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
    let slots = Arc::new(Semaphore::new(admission.max_connections));
    let per_ip = Arc::new(Mutex::new(HashMap::new()));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("accepting a connection failed: {error}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                "closed the connection from {peer}: {} connections are the limit",
                admission.max_connections
            );
            continue;
        };
        let Some(ip_slot) = IpSlot::take(&per_ip, peer.ip(), admission.max_connections_per_ip)
        else {
            tracing::debug!(
                "closed the connection from {peer}: {} connections from one address are the limit",
                admission.max_connections_per_ip
            );
            continue;
        };
        let token = admission.token.clone();
        let tls = admission.tls.clone();
        let handle = handle.clone();
        let other = other.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _slots = (slot, ip_slot);
            let mut stream = match tls {
                None => Stream::Plain(tcp),
                Some(tls) => {
                    let accepted = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        accepted = tls.accept(tcp) => accepted,
                    };
                    match accepted {
                        Ok(stream) => stream,
                        Err(
                            refusal @ (tls::TlsRefusal::PlaintextPairbroker
                            | tls::TlsRefusal::NotTls),
                        ) => {
                            tracing::warn!("refused {refusal} at {peer}: this server requires TLS");
                            return;
                        }
                        Err(refusal) => {
                            tracing::info!("closed the connection from {peer}: {refusal}");
                            return;
                        }
                    }
                }
            };
            // A peer still silent when the server stops must not hold the stop up.
            let greeted = tokio::select! {
                _ = shutdown.cancelled() => return,
                greeted = handshake::greet(&mut stream, &token, other.is_some()) => greeted,
            };
            match (greeted, other) {
                (Ok(Greeting::Pairbroker), _) => {
                    tracing::debug!("accepted a connection from {peer}");
                    handle(stream, peer).await;
                }
                (Ok(Greeting::Other(_)), Some(_)) if token.is_set() => tracing::warn!(
                    "refused a client at {peer} that is not pairbroker's (Go's net/rpc?): this \
                     server has an access token, and such a client cannot give one"
                ),
                (Ok(Greeting::Other(read)), Some(other)) => {
                    // Only plain connections have `other` (see above).
                    if let Stream::Plain(tcp) = stream {
                        other(tcp, read, peer).await
                    }
                }
                (Ok(Greeting::Other(_)), None) => {}
                (Err(HandshakeError::TlsClient), _) => tracing::warn!(
                    "refused a TLS client at {peer}: this server has no TLS (start it with \
                     --tls-cert and --tls-key, or --tls-dir)"
                ),
                (Err(error), _) => {
                    tracing::debug!(
                        "closed the connection from {peer}: the handshake failed: {error}"
                    )
                }
            }
        });
    }
}
