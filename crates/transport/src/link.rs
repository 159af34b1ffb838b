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
        /// The last dial's error.
        #[source]
        source: ConnectError,
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
            .map_err(|source| LinkError::Gone {
                address: self.address.clone(),
                source,
            })?;
        tracing::info!(broker = %self.address, "reconnected to the broker");
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = (generation + 1, client);
        Ok(())
    }
}
