//! The handshake that opens every pairbroker connection, before any tarpc frame.
//!
//! The dialling side sends [`MAGIC`], then its access token (a big-endian `u16` length and the
//! bytes; length 0 for none). The accepting side answers one byte: [`ACCEPTED`],
//! [`WRONG_TOKEN`], [`NOT_PAIRBROKER`], [`NOT_READY`] (a broker still opening its store) or
//! [`TOO_MANY_CONNECTIONS`]; a server with TLS answers a handshake sent without it
//! [`TLS_REQUIRED`]. With TLS, the handshake runs inside it (see [`crate::tls`]). Doing this
//! per connection means that a request is
//! never read, let alone acted on (e.g. a subscriber's address dialled), before its
//! connection is authenticated; and that a peer speaking another protocol, or nothing at all,
//! is shown the door within [`HANDSHAKE_TIMEOUT`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first bytes of every connection: the protocol and its version.
pub const MAGIC: &[u8; 8] = b"PAIRBRK1";
/// The longest access token: long enough for any generated secret.
pub const MAX_TOKEN_LENGTH: usize = 256;
/// How long a new connection may take to complete the handshake. A client on the same LAN needs
/// microseconds; a peer that connects and sends nothing is closed after this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The answer to a correct handshake.
pub const ACCEPTED: u8 = 0;
/// The answer to a handshake with a missing or wrong token.
pub const WRONG_TOKEN: u8 = 1;
/// The answer to bytes that are not a pairbroker handshake.
pub const NOT_PAIRBROKER: u8 = 2;
/// The answer of a broker still opening its store: it will serve soon, so a client may try
/// again rather than give up.
pub const NOT_READY: u8 = 3;
/// The answer to a correct handshake when the server holds as many connections as it allows,
/// in all or from the client's address.
pub const TOO_MANY_CONNECTIONS: u8 = 4;
/// The answer of a server with TLS to a handshake sent without it.
pub const TLS_REQUIRED: u8 = 5;

/// A shared secret, or none. Its `Debug` never shows the secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AccessToken(Option<Arc<str>>);

impl AccessToken {
    /// No token: a server accepts every client, a client offers nothing.
    pub fn none() -> Self {
        Self(None)
    }

    /// A token of 1 to [`MAX_TOKEN_LENGTH`] bytes.
    pub fn new(token: &str) -> Result<Self, String> {
        if token.is_empty() || token.len() > MAX_TOKEN_LENGTH {
            return Err(format!(
                "an access token is 1 to {MAX_TOKEN_LENGTH} bytes long, not {}",
                token.len()
            ));
        }
        Ok(Self(Some(Arc::from(token))))
    }

    /// Whether a token is set.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], str::as_bytes)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() {
            "AccessToken(set)"
        } else {
            "AccessToken(none)"
        })
    }
}

/// Parses a token from the command line or the environment.
impl std::str::FromStr for AccessToken {
    type Err = String;

    fn from_str(token: &str) -> Result<Self, String> {
        Self::new(token)
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The connection failed during the handshake.
    #[error("the connection failed during the handshake: {0}")]
    Io(#[from] std::io::Error),
    /// The peer took longer than [`HANDSHAKE_TIMEOUT`].
    #[error("no handshake within {HANDSHAKE_TIMEOUT:?}")]
    TimedOut,
    /// The peer does not speak pairbroker.
    #[error("the peer does not speak the pairbroker protocol")]
    NotPairbroker,
    /// The token was missing or wrong.
    #[error(
        "the access token was refused; give the server's token with --token or PAIRBROKER_TOKEN"
    )]
    WrongToken,
    /// The broker is still opening its store.
    #[error("the broker is starting and not ready yet")]
    NotReady,
    /// The server holds as many connections as it allows.
    #[error(
        "the server holds as many connections as it allows, in all or from this address \
         (its --max-connections and --max-connections-per-ip); try again once some close"
    )]
    TooManyConnections,
    /// The server requires TLS, and this connection has none.
    #[error(
        "it requires TLS; give the CA of its certificate with --tls-ca FILE, or --tls-dir DIR"
    )]
    TlsRequired,
    /// The peer opened a TLS handshake, and this server has no TLS.
    #[error("the peer speaks TLS, and this server has none")]
    TlsClient,
}

/// The dialling side: offers `token` and waits for the verdict.
pub async fn offer<S>(stream: &mut S, token: &AccessToken) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let secret = token.bytes();
        let mut hello = Vec::with_capacity(MAGIC.len() + 2 + secret.len());
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&(secret.len() as u16).to_be_bytes());
        hello.extend_from_slice(secret);
        stream.write_all(&hello).await?;
        match stream.read_u8().await? {
            ACCEPTED => Ok(()),
            WRONG_TOKEN => Err(HandshakeError::WrongToken),
            NOT_READY => Err(HandshakeError::NotReady),
            TOO_MANY_CONNECTIONS => Err(HandshakeError::TooManyConnections),
            TLS_REQUIRED => Err(HandshakeError::TlsRequired),
            _ => Err(HandshakeError::NotPairbroker),
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| HandshakeError::TimedOut)?
}

/// What a connection's first bytes said it speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Greeting {
    /// A pairbroker handshake, with an accepted token.
    Pairbroker,
    /// Something else: the bytes read so far, which belong to that other protocol.
    Other(Vec<u8>),
}

/// The accepting side: reads the peer's handshake, checks its token against `expected` (any
/// token passes when `expected` is none) and answers.
pub async fn check<S>(stream: &mut S, expected: &AccessToken) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match greet(stream, expected, false).await? {
        Greeting::Pairbroker => Ok(()),
        Greeting::Other(_) => Err(HandshakeError::NotPairbroker),
    }
}

/// [`check`], but a peer whose first bytes are not [`MAGIC`] is not answered: its bytes are
/// handed back, for a server that speaks another protocol on the same port. They are told
/// apart as soon as a byte differs from the magic, so that the other protocol's first message
/// need not be longer than the magic.
pub async fn greet<S>(
    stream: &mut S,
    expected: &AccessToken,
    others_welcome: bool,
) -> Result<Greeting, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    greet_if_room(stream, expected, others_welcome, HANDSHAKE_TIMEOUT, || {
        Some(())
    })
    .await
    .map(|(greeting, ())| greeting)
}

/// [`greet`] within `deadline`, with the server's last word: once the peer has shown a correct
/// handshake (or, with `others_welcome`, the first bytes of another protocol), `room` is asked
/// for its place among the server's connections. With none, a pairbroker peer is answered
/// [`TOO_MANY_CONNECTIONS`] and another protocol is closed.
pub async fn greet_if_room<S, T>(
    stream: &mut S,
    expected: &AccessToken,
    others_welcome: bool,
    deadline: Duration,
    room: impl FnOnce() -> Option<T>,
) -> Result<(Greeting, T), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let mut magic = [0; MAGIC.len()];
        let mut read = 0;
        while read < MAGIC.len() {
            let got = stream.read(&mut magic[read..]).await?;
            if got == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            // A TLS client is closed without an answer: it reads none but TLS. No other protocol
            // served beside ours opens with this byte (Go's gob stream opens with the length of
            // its first message, the definition of rpc.Request, far longer than 22 bytes).
            if read == 0 && magic[0] == crate::tls::TLS_HANDSHAKE_RECORD {
                return Err(HandshakeError::TlsClient);
            }
            read += got;
            if magic[..read] != MAGIC[..read] {
                if others_welcome {
                    // Another protocol has no answer byte for "no room": it is just closed.
                    let place = room().ok_or(HandshakeError::TooManyConnections)?;
                    return Ok((Greeting::Other(magic[..read].to_vec()), place));
                }
                let _ = stream.write_u8(NOT_PAIRBROKER).await;
                return Err(HandshakeError::NotPairbroker);
            }
        }
        let length = stream.read_u16().await? as usize;
        if length > MAX_TOKEN_LENGTH {
            let _ = stream.write_u8(NOT_PAIRBROKER).await;
            return Err(HandshakeError::NotPairbroker);
        }
        let mut offered = vec![0; length];
        stream.read_exact(&mut offered).await?;
        // Constant-time comparison, so that timing does not reveal how much of a guess is right.
        let accepted = !expected.is_set() || bool::from(offered.ct_eq(expected.bytes()));
        if !accepted {
            let _ = stream.write_u8(WRONG_TOKEN).await;
            return Err(HandshakeError::WrongToken);
        }
        match room() {
            Some(place) => {
                stream.write_u8(ACCEPTED).await?;
                Ok((Greeting::Pairbroker, place))
            }
            None => {
                let _ = stream.write_u8(TOO_MANY_CONNECTIONS).await;
                Err(HandshakeError::TooManyConnections)
            }
        }
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| HandshakeError::TimedOut)?
}

/// A server with TLS, to a client that sent a pairbroker handshake without it: reads the
/// handshake, so that the answer is not lost to a reset of a connection closed with unread
/// bytes, and answers [`TLS_REQUIRED`]. Gives up quietly on anything else.
pub async fn require_tls<S>(stream: &mut S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let mut magic = [0; MAGIC.len()];
        stream.read_exact(&mut magic).await?;
        if magic != *MAGIC {
            return Ok(());
        }
        let length = (stream.read_u16().await? as usize).min(MAX_TOKEN_LENGTH);
        let mut offered = vec![0; length];
        stream.read_exact(&mut offered).await?;
        stream.write_u8(TLS_REQUIRED).await?;
        stream.shutdown().await
    };
    let _: Result<std::io::Result<()>, _> = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await;
}
