//! A server that is bound but not ready yet: [`refuse_while`] answers every connection at
//! once with "not ready yet" while the server opens what it needs (a broker, its store).
//!
//! Binding first means that a port already taken is reported at once; answering at once means
//! that a client that comes early is told why it cannot be served, rather than left waiting
//! for a handshake that comes only when its deadline has passed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::handshake::{HANDSHAKE_TIMEOUT, MAGIC, MAX_TOKEN_LENGTH, NOT_READY};
use crate::ServerTls;

/// How many early connections are answered at once. Each answer takes a task for at most
/// [`HANDSHAKE_TIMEOUT`]; a flood beyond this many is closed without one, so that it cannot
/// cost more than a few hundred small tasks.
pub const MAX_REFUSALS_AT_ONCE: usize = 256;

/// How to turn away one early connection: a future given the stream.
pub type Refusal = Arc<dyn Fn(TcpStream) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Runs `starting` to its end and returns its output; meanwhile each connection to `listener`
/// is turned away by `refuse` (e.g. [`not_ready`]), each in a task of its own, so that a slow
/// peer holds up neither the others nor the start. The listener is left as it was, for the
/// server to accept on once started.
pub async fn refuse_while<T>(
    listener: &TcpListener,
    refuse: Refusal,
    starting: impl Future<Output = T>,
) -> T {
    /// How long to wait before accepting again after an accept error, so that a persistent
    /// error (out of file descriptors) does not spin a core.
    const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
    let refusing = Arc::new(Semaphore::new(MAX_REFUSALS_AT_ONCE));
    tokio::pin!(starting);
    loop {
        let accepted = tokio::select! {
            started = &mut starting => return started,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = refusing.clone().try_acquire_owned() else {
                    tracing::debug!("closed the connection from {peer} at once: still starting");
                    continue;
                };
                let refusal = refuse(stream);
                tokio::spawn(async move {
                    let _permit = permit;
                    // Past the deadline the peer has given up anyway.
                    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, refusal).await;
                    tracing::debug!("told the client at {peer} that this server is not ready yet");
                });
            }
            Err(error) => {
                tracing::warn!("accepting a connection failed: {error}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Turns away a pairbroker client with [`NOT_READY`], inside TLS when the server has it (a
/// TLS client reads nothing else), once it has sent its handshake (closing with its bytes
/// unread could reset the connection before the client reads the answer). Anything else, e.g.
/// Go's net/rpc, has no word for it and is just closed.
pub fn not_ready(tls: Option<ServerTls>) -> Refusal {
    Arc::new(move |tcp| {
        let tls = tls.clone();
        Box::pin(async move {
            match tls {
                None => answer_not_ready(tcp).await,
                Some(tls) => {
                    if let Ok(stream) = tls.accept(tcp).await {
                        answer_not_ready(stream).await
                    }
                }
            }
        })
    })
}

async fn answer_not_ready<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut magic = [0; MAGIC.len()];
    if stream.read_exact(&mut magic).await.is_err() || &magic != MAGIC {
        return;
    }
    let Ok(length) = stream.read_u16().await else {
        return;
    };
    if usize::from(length) > MAX_TOKEN_LENGTH {
        return;
    }
    // The token is not checked: "not ready yet" tells nothing that a closed port would not.
    let mut token = vec![0; usize::from(length)];
    if stream.read_exact(&mut token).await.is_ok() {
        let _ = stream.write_u8(NOT_READY).await;
        let _ = stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{connect_broker, AccessToken, ConnectError, HandshakeError};
    use std::time::Instant;

    #[tokio::test]
    async fn a_client_that_comes_while_the_server_starts_is_told_it_is_not_ready() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let client = tokio::spawn(async move {
            let asked = Instant::now();
            let error = connect_broker(
                &address,
                Duration::from_secs(1),
                &AccessToken::new("s3cret").unwrap(),
                None,
            )
            .await
            .err();
            let _ = started_tx.send(());
            (error, asked.elapsed())
        });
        let started = refuse_while(&listener, not_ready(None), async {
            let _ = started_rx.await;
            "started"
        })
        .await;
        assert_eq!(started, "started");
        let (error, took) = client.await.unwrap();
        assert!(told_not_ready(&error), "{error:?}");
        assert!(took < HANDSHAKE_TIMEOUT, "answered only after {took:?}");
    }

    /// Whether a dial ended with the server's "not ready yet".
    fn told_not_ready(error: &Option<ConnectError>) -> bool {
        matches!(
            error,
            Some(ConnectError::Handshake {
                source: HandshakeError::NotReady,
                ..
            })
        )
    }

    #[tokio::test]
    async fn a_tls_client_that_comes_while_the_server_starts_is_told_so_inside_tls() {
        let dir = tempfile::tempdir().unwrap();
        let files = crate::tls::write_development_files(dir.path()).unwrap();
        let (server, client) = (files.server().unwrap(), files.client().unwrap().unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let asking = tokio::spawn(async move {
            let error = connect_broker(
                &address,
                Duration::from_secs(1),
                &AccessToken::none(),
                Some(&client),
            )
            .await
            .err();
            let _ = started_tx.send(());
            error
        });
        refuse_while(&listener, not_ready(server), async {
            let _ = started_rx.await;
        })
        .await;
        let error = asking.await.unwrap();
        assert!(told_not_ready(&error), "{error:?}");
    }

    #[tokio::test]
    async fn another_protocol_is_closed_while_the_server_starts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let peer = async {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream
                .write_all(b"{\"method\":\"Broker.Publish\"}")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let read = stream.read_to_end(&mut answer).await;
            // Closed, without a byte: a reset is a close too.
            assert!(read.map_or(true, |_| answer.is_empty()), "{answer:?}");
        };
        refuse_while(&listener, not_ready(None), peer).await;
    }
}
