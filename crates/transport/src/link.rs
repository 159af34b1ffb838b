//! [`BrokerLink`]: a connection to the broker that comes back by itself. tarpc has no
//! reconnect, so the miner and the factory share this one: when a call finds the connection
//! gone, the link dials again with capped exponential backoff and jitter, and the call is
//! made again on the new connection.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use stubs::BrokerClient;
use tarpc::client::RpcError;

use crate::{connect_broker, AccessToken, ConnectError};

/// The first pause before dialling a lost broker again.
pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
/// The longest pause between two dials: a restarted broker is found within this long.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);
/// How long a program keeps dialling a lost broker by default before it gives up.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Why a call through a [`BrokerLink`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The broker went away and did not come back in time.
    #[error("lost the broker at {address} and could not reconnect: {source}")]
    Gone {
        /// The broker's address.
        address: String,
        /// The last dial's error (shared by every caller that was waiting on that connection).
        #[source]
        source: Arc<ConnectError>,
    },
    /// The call failed for another reason (e.g. its deadline passed).
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

/// A connection to the broker that reconnects when it is lost.
pub struct BrokerLink {
    address: String,
    connect_timeout: Duration,
    give_up_after: Duration,
    token: AccessToken,
    /// The client in use and its generation, bumped at each reconnect, so that of several
    /// callers that saw the same connection fail, only the first dials again.
    current: Mutex<(u64, BrokerClient)>,
    /// Held while dialling: one dial at a time.
    dialling: tokio::sync::Mutex<()>,
    /// The generation whose reconnect gave up, and its last error: the other callers that saw
    /// that connection fail give up at once rather than each spending `give_up_after` again.
    gave_up: Mutex<Option<(u64, Arc<ConnectError>)>>,
}

/// Whether a call failed because the connection itself is gone.
pub fn is_connection_lost(error: &RpcError) -> bool {
    matches!(
        error,
        RpcError::Shutdown | RpcError::Send(_) | RpcError::Channel(_)
    )
}

impl BrokerLink {
    /// Connects to the broker at `address`. The first connection is not retried: a broker that
    /// is not there at start is a mistake to report at once.
    pub async fn connect(
        address: &str,
        connect_timeout: Duration,
        give_up_after: Duration,
        token: AccessToken,
    ) -> Result<Arc<Self>, ConnectError> {
        let client = connect_broker(address, connect_timeout, &token).await?;
        Ok(Arc::new(Self {
            address: address.to_owned(),
            connect_timeout,
            give_up_after,
            token,
            current: Mutex::new((0, client)),
            dialling: tokio::sync::Mutex::new(()),
            gave_up: Mutex::new(None),
        }))
    }

    /// The broker's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn current(&self) -> (u64, BrokerClient) {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes a call, reconnecting and calling again as long as the connection is lost.
    pub async fn call<T, F, Fut>(&self, request: F) -> Result<T, LinkError>
    where
        F: Fn(BrokerClient) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        loop {
            let (generation, client) = self.current();
            match request(client).await {
                Err(error) if is_connection_lost(&error) => {
                    tracing::warn!(broker = %self.address, %error, "lost the broker; reconnecting");
                    self.reconnect(generation).await?;
                }
                result => return result.map_err(LinkError::from),
            }
        }
    }

    /// Replaces the client of `generation` with a new connection, unless another caller has
    /// done so already.
    async fn reconnect(&self, generation: u64) -> Result<(), LinkError> {
        let _dialling = self.dialling.lock().await;
        if self.current().0 != generation {
            return Ok(());
        }
        let gone = |source| LinkError::Gone {
            address: self.address.clone(),
            source,
        };
        let gave_up = self
            .gave_up
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some((given_up, source)) = gave_up {
            if given_up == generation {
                return Err(gone(source));
            }
        }
        let backoff = ExponentialBuilder::default()
            .with_min_delay(RECONNECT_MIN_DELAY)
            .with_max_delay(RECONNECT_MAX_DELAY)
            .with_jitter()
            .without_max_times()
            .with_total_delay(Some(self.give_up_after));
        let client = (|| connect_broker(&self.address, self.connect_timeout, &self.token))
            .retry(backoff)
            .notify(|error, pause| {
                tracing::info!(broker = %self.address, %error, ?pause, "broker not back yet");
            })
            .await
            .map_err(|source| {
                let source = Arc::new(source);
                *self
                    .gave_up
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    Some((generation, source.clone()));
                gone(source)
            })?;
        tracing::info!(broker = %self.address, "reconnected to the broker");
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = (generation + 1, client);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{accept, Admission};
    use std::time::Instant;
    use tokio::io::AsyncReadExt;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    #[tokio::test]
    async fn callers_that_lost_the_same_connection_give_up_together() {
        // A server that takes the handshake, then holds each connection until it stops.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let server = tokio::spawn(accept(
            listener,
            Admission::default(),
            stop.clone(),
            connections.clone(),
            {
                let stop = stop.clone();
                move |mut stream, _| {
                    let stop = stop.clone();
                    async move {
                        let mut buffer = [0u8; 1024];
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = async { while stream.read(&mut buffer).await.is_ok_and(|n| n > 0) {} } => {}
                        }
                    }
                }
            },
        ));
        let link = BrokerLink::connect(
            &address.to_string(),
            Duration::from_millis(100),
            Duration::from_millis(300),
            AccessToken::none(),
        )
        .await
        .unwrap();
        // Four calls waiting on the server, which never answers.
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let link = link.clone();
                tokio::spawn(async move {
                    let result = link
                        .call(|client| async move { client.stats(tarpc::context::current()).await })
                        .await;
                    (result, Instant::now())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The server goes away; in its place, one that notes each dial and hangs up at once.
        stop.cancel();
        server.await.unwrap();
        connections.close();
        connections.wait().await;
        let impostor = tokio::net::TcpListener::bind(address).await.unwrap();
        let dials = Arc::new(Mutex::new(Vec::new()));
        let noted = dials.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = impostor.accept().await {
                noted.lock().unwrap().push(Instant::now());
                drop(stream);
            }
        });

        let mut first_gone = None::<Instant>;
        for call in calls {
            let (result, at) = call.await.unwrap();
            let error = result.expect_err("the broker is gone");
            assert!(matches!(error, LinkError::Gone { .. }), "{error:?}");
            first_gone = Some(first_gone.map_or(at, |first| first.min(at)));
        }
        let first_gone = first_gone.unwrap();
        let dials = dials.lock().unwrap().clone();
        assert!(!dials.is_empty(), "the link dialled again");
        // Once one caller has given up, the others give up with it instead of dialling anew.
        assert!(
            dials.iter().all(|dial| *dial <= first_gone),
            "{} of {} dials came after the first caller gave up",
            dials.iter().filter(|dial| **dial > first_gone).count(),
            dials.len()
        );
    }
}
