//! A whole broker built from its configuration: its store opened while every client is told
//! that the broker is not ready yet, then its port and its HTTP side served until shutdown.
//!
//! The caller binds the listeners and owns the shutdown signal, so that a port already taken
//! is reported before anything opens, and tests start a real broker on port 0 in-process.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use transport::starting::{self, refuse_while};

use crate::outcome::Observer;
use crate::requests::{BrokerState, Watcher};
use crate::settings::Settings;
use crate::store::{StoreConfig, StoreError};

/// What a broker is built from.
pub struct Config {
    /// Its limits and TLS.
    pub settings: Settings,
    /// Which store keeps its topics.
    pub store: StoreConfig,
    /// Hears of what became of every job.
    pub observer: Observer,
    /// Hears of every subscribe and publish, if anyone needs to.
    pub watcher: Option<Watcher>,
}

/// A broker whose store is open, about to serve.
pub struct Ready {
    state: Arc<BrokerState>,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: CancellationToken,
}

/// Serves a broker built from `config` on `listener`, its dashboard and `/metrics` on `http`
/// if given, until `shutdown` is cancelled; then waits for its connections and dispatchers to
/// finish. Fails only if its store cannot be opened.
pub async fn run(
    config: Config,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), StoreError> {
    let Some(ready) = open(config, listener, http, shutdown).await? else {
        return Ok(());
    };
    ready.announce();
    ready.serve().await;
    Ok(())
}

/// Opens the store of `config` while every connection to `listener` and `http` is told at once
/// that the broker is not ready yet; `None` if `shutdown` comes first.
pub async fn open(
    config: Config,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<Option<Ready>, StoreError> {
    if config.store.is_jetstream() {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(
                "until NATS JetStream is ready, clients at {address} are told that the broker is starting"
            );
        }
    }
    let opening = async {
        tokio::select! {
            opened = config.store.open() => Some(opened),
            _ = shutdown.cancelled() => None,
        }
    };
    let tls = config.settings.admission.tls.clone();
    let opening = refuse_while(&listener, starting::not_ready(tls), opening);
    let opened = match &http {
        Some(http) => refuse_while(http, Arc::new(http_not_ready), opening).await,
        None => opening.await,
    };
    let Some(store) = opened else {
        return Ok(None);
    };
    let state = BrokerState::new(
        store?,
        config.settings,
        config.observer,
        config.watcher,
        shutdown.clone(),
    );
    Ok(Some(Ready {
        state,
        listener,
        http,
        shutdown,
    }))
}

impl Ready {
    /// The broker's state, for inspection.
    pub fn state(&self) -> &Arc<BrokerState> {
        &self.state
    }

    /// Where the HTTP side listens, if it does.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref()?.local_addr().ok()
    }

    /// Says where the broker listens: the lines an operator looks for at start.
    fn announce(&self) {
        if let Ok(address) = self.listener.local_addr() {
            if self.state.settings().admission.tls.is_some() {
                tracing::info!("listening on {address} in TLS");
            } else {
                tracing::info!("listening on {address}");
            }
        }
        if let Some(http) = self.http_address() {
            tracing::info!(
                "dashboard on http://{http}/ (metrics: /metrics, JSON: /api/stats, /api/dead-letters)"
            );
        }
    }

    /// Serves until shutdown: the HTTP side in a task of its own, the broker's port here. Returns
    /// once its connections have closed and its dispatchers have finished their calls.
    pub async fn serve(self) {
        if let Some(listener) = self.http {
            let (state, shutdown) = (self.state.clone(), self.shutdown.clone());
            tokio::spawn(async move {
                if let Err(error) = crate::http::serve(state, listener, shutdown).await {
                    tracing::error!("the dashboard and /metrics stopped: {error}");
                }
            });
        }
        crate::server::serve(self.state, self.listener, self.shutdown).await;
    }
}

/// Answers an HTTP request (a dashboard, a Prometheus scrape, a health check) while the broker
/// starts: 503, with when to ask again, rather than a wait with no answer.
fn http_not_ready(mut stream: TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    /// The most of a request read before the answer: its head, which is all a GET has.
    const MOST_READ: usize = 16 * 1024;
    const BODY: &str = "the broker is starting and not ready yet\n";
    Box::pin(async move {
        // Read the request first: a connection closed with bytes unread is reset, and the
        // client could lose the answer.
        let mut request = Vec::new();
        let mut buffer = [0; 4096];
        while !request.windows(4).any(|end| end == b"\r\n\r\n") && request.len() < MOST_READ {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => request.extend_from_slice(&buffer[..read]),
            }
        }
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Retry-After: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Fsync;
    use stubs::ChannelRequest;

    /// A broker on disk in `dir`, on a free loopback port, with no HTTP side.
    async fn on_disk(dir: &std::path::Path, shutdown: &CancellationToken) -> Ready {
        let config = Config {
            settings: Settings::default(),
            store: StoreConfig::Disk {
                dir: dir.to_path_buf(),
                fsync: Fsync::Always,
                dead_letter_limit: 10,
            },
            observer: Arc::new(|_| {}),
            watcher: None,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        open(config, listener, None, shutdown.clone())
            .await
            .unwrap()
            .expect("opened before any shutdown")
    }

    #[tokio::test]
    async fn a_broker_built_on_disk_finds_its_topics_when_built_again() {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let ready = on_disk(dir.path(), &shutdown).await;
        let request = ChannelRequest {
            topic: "multiply".into(),
            buffer: 7,
        };
        ready.state().create_channel(request).await.unwrap();
        let serving = tokio::spawn(ready.serve());
        shutdown.cancel();
        serving.await.unwrap();

        let again = on_disk(dir.path(), &CancellationToken::new()).await;
        let topics = again.state().stats().await.topics;
        let kept: Vec<(&str, u64)> = topics
            .iter()
            .map(|topic| (topic.name.as_str(), topic.capacity))
            .collect();
        assert_eq!(kept, [("multiply", 7)]);
    }
}
