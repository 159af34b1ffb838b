//! tarpc over TCP, set up the same way by every pairbroker program.
//!
//! - [`framed`]: a bincode transport over one TCP stream, with [`MAX_FRAME_LENGTH`] on both ends.
//! - [`connect_broker`] and [`connect_factory`]: dial with a deadline and return a tarpc client.
//! - [`accept`]: accept connections until shutdown and hand each to a connection handler.
//! - [`link`]: a connection to the broker that reconnects by itself.

pub mod link;

pub use link::{BrokerLink, LinkError};

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use stubs::{BrokerClient, FactoryClient};
use tarpc::serde_transport::Transport;
use tarpc::tokio_serde::formats::Bincode;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The largest frame either end accepts. Every message of the lab is well under a hundred
/// bytes; the cap stops a length header from a broken or hostile peer from making us reserve
/// memory for a frame that will never be useful.
pub const MAX_FRAME_LENGTH: usize = 64 * 1024;

/// How long a program waits for a TCP connection to the broker or to a factory by default.
/// Loopback and LAN connections take microseconds; seconds mean nobody is listening.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A tarpc transport over TCP with bincode messages.
pub type TcpTransport<Item, SinkItem> =
    Transport<TcpStream, Item, SinkItem, Bincode<Item, SinkItem>>;

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
    /// Nobody answered within the connect timeout.
    #[error("cannot connect to {address}: no answer within {timeout:?}")]
    TimedOut {
        /// The address dialled.
        address: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Wraps one TCP stream into a length-delimited bincode transport.
pub fn framed<Item, SinkItem>(stream: TcpStream) -> TcpTransport<Item, SinkItem>
where
    Item: DeserializeOwned,
    SinkItem: Serialize,
{
    // Small request/reply messages: without NODELAY, Nagle's algorithm holds each reply
    // back until the previous one is acknowledged, which adds up to 40 ms per call.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_LENGTH)
        .new_codec();
    tarpc::serde_transport::new(Framed::new(stream, codec), Bincode::default())
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

/// Opens a TCP connection to `address`, giving up after `timeout`.
pub async fn dial(address: &str, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let socket_address = resolve(address).await?;
    match tokio::time::timeout(timeout, TcpStream::connect(socket_address)).await {
        Ok(Ok(stream)) => Ok(stream),
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

/// Connects to a broker at `address` (`host:port`).
pub async fn connect_broker(
    address: &str,
    timeout: Duration,
) -> Result<BrokerClient, ConnectError> {
    let stream = dial(address, timeout).await?;
    Ok(BrokerClient::new(tarpc::client::Config::default(), framed(stream)).spawn())
}

/// Connects to a factory at `address` (`host:port`).
pub async fn connect_factory(
    address: &str,
    timeout: Duration,
) -> Result<FactoryClient, ConnectError> {
    let stream = dial(address, timeout).await?;
    Ok(FactoryClient::new(tarpc::client::Config::default(), framed(stream)).spawn())
}

/// Accepts connections on `listener` until `shutdown` is cancelled, running `handle` on each
/// in its own task on `tracker`, so that the caller can wait for open connections to finish.
///
/// An accept error (e.g. too many open files) is logged and accepting goes on after a short
/// pause, rather than ending the server.
pub async fn accept<H, F>(
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    /// How long to wait before accepting again after an accept error, so that a persistent
    /// error (out of file descriptors) does not spin a core.
    const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracing::debug!(%peer, "connection accepted");
                tracker.spawn(handle(stream, peer));
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}
