//! [`BrokerLink`]: a connection to a broker that comes back by itself. tarpc has no
//! reconnect, so the miner and the factory share this one: when a call finds the connection
//! gone, the link dials again with the pauses of [`Retry`], going round the brokers it was given
//! from the one after the lost one, and the call is made again on the new connection. At start,
//! it may wait for a broker that is not up yet, so that programs started together need no
//! order. [`BrokerLink::ask`] sends a request again while its answer failed for now, and
//! [`BrokerLink::retry`] gives its callers the same pauses for what else fails for now, so that
//! every client tries again one way, configured by the same flags.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use stubs::{BrokerClient, BrokerError};
use tarpc::client::RpcError;
use tokio_util::sync::CancellationToken;

use crate::retry::{transient_failure, Ended, Retry, Settled};
use crate::words::Rounded;
use crate::{connect_broker, AccessToken, ConnectError};

/// How long a program keeps dialling a lost broker by default before it gives up.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// How a miner or a factory reaches its brokers: the same settings on both.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// The brokers' addresses (`host:port`), tried in this order at start; once connected, a
    /// lost broker is followed by the next one in the list, round and round.
    pub brokers: Vec<String>,
    /// How long to wait for one connection.
    pub connect_timeout: Duration,
    /// How long to keep trying what failed for now (dialling once the broker went away, a
    /// request its store could not keep) before giving up.
    pub give_up_after: Duration,
    /// How long to keep dialling at start while no broker is up or ready yet. Zero: a broker
    /// that is not there at start is a mistake, reported at once.
    pub wait_for_broker: Duration,
    /// The shared secret given to the broker.
    pub token: AccessToken,
    /// TLS to dial the brokers with; none dials plain TCP.
    pub tls: Option<crate::ClientTls>,
}

impl LinkConfig {
    /// The broker at `address`, with the default timeouts, no wait at start and no token.
    pub fn to(address: impl Into<String>) -> Self {
        Self {
            brokers: vec![address.into()],
            connect_timeout: crate::DEFAULT_CONNECT_TIMEOUT,
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            wait_for_broker: Duration::ZERO,
            token: AccessToken::none(),
            tls: None,
        }
    }
}

/// Why a call through a [`BrokerLink`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The broker went away and neither it nor another came back in time.
    #[error("lost the broker at {address} and could not reconnect: {source}")]
    Gone {
        /// The lost broker's address.
        address: String,
        /// The last dial's error (shared by every caller that was waiting on that connection).
        #[source]
        source: Arc<ConnectError>,
    },
    /// The connection was lost while the program was stopping, so it was not dialled again.
    #[error("lost the broker while stopping")]
    Stopped,
    /// The call failed for another reason (e.g. its deadline passed).
    #[error("{}", crate::words::describe(.0))]
    Rpc(#[from] RpcError),
}

impl LinkError {
    /// Whether the call may succeed if made again a little later: it got no answer in time
    /// (the broker may be busy, or a NATS cluster electing its leaders). A broker given up on,
    /// or a program stopping, is final.
    pub fn is_transient(&self) -> bool {
        match self {
            LinkError::Rpc(error) => {
                matches!(error, RpcError::DeadlineExceeded) || is_connection_lost(error)
            }
            LinkError::Gone { .. } | LinkError::Stopped => false,
        }
    }
}

/// The connection in use.
#[derive(Clone)]
struct Current {
    /// Bumped at each reconnect, so that of several callers that saw the same connection fail,
    /// only the first dials again.
    generation: u64,
    /// Which of the brokers it is.
    broker: usize,
    client: BrokerClient,
}

/// A connection to one of a list of brokers that reconnects when it is lost.
pub struct BrokerLink {
    config: LinkConfig,
    // parking_lot's: held for a clone or a store, never across an await.
    current: Mutex<Current>,
    /// Held while dialling: one dial at a time.
    dialling: tokio::sync::Mutex<()>,
    /// The generation whose reconnect gave up, and its last error: the other callers that saw
    /// that connection fail give up at once rather than each spending `give_up_after` again.
    gave_up: Mutex<Option<(u64, Arc<ConnectError>)>>,
    /// The program's stop: no dial outlives it.
    shutdown: CancellationToken,
}

/// Whether a call failed because the connection itself is gone.
pub fn is_connection_lost(error: &RpcError) -> bool {
    matches!(
        error,
        RpcError::Shutdown | RpcError::Send(_) | RpcError::Channel(_)
    )
}

impl BrokerLink {
    /// Connects to the first of `config.brokers` that answers, trying each in turn. When none
    /// does, and every failure [`ConnectError::is_transient`], tries them all again with the
    /// [`Retry`] pauses until `config.wait_for_broker` has passed; otherwise (and with no wait)
    /// the error is the first that waiting would not mend, or the last one.
    ///
    /// `None` once `shutdown` is cancelled while waiting, at once even in the middle of a dial:
    /// the program is stopping, and a broker that never comes must not keep it waiting. The
    /// link watches `shutdown` afterwards too, so that no reconnect delays the stop.
    pub async fn connect(
        config: &LinkConfig,
        shutdown: CancellationToken,
    ) -> Result<Option<Arc<Self>>, ConnectError> {
        let mut retry = Retry::new(Some(config.wait_for_broker), shutdown.clone());
        // The first try is not cut short (its connect timeout bounds it), so that a broker
        // missing at start is reported even to a program stopped at once; the wait is.
        let mut attempt = Self::connect_once(config, &shutdown).await;
        loop {
            let error = match attempt {
                Ok(link) => return Ok(Some(link)),
                Err(error) if !error.is_transient() => return Err(error),
                Err(error) => error,
            };
            let left = retry.left().unwrap_or_default();
            let waited = retry.wait(|pause| {
                tracing::info!(
                    "waiting for the broker at {}: {}; trying again in {}, for {} more at most",
                    config.brokers.join(","),
                    error.cause(),
                    Rounded(pause),
                    Rounded(left)
                );
            });
            match waited.await {
                Ok(()) => {}
                Err(Ended::GaveUp) => return Err(error),
                Err(Ended::Stopped) => return Ok(None),
            }
            attempt = tokio::select! {
                _ = retry.stopped() => return Ok(None),
                attempt = Self::connect_once(config, &shutdown) => attempt,
            };
        }
    }

    /// One try of each of `config.brokers`, in order.
    async fn connect_once(
        config: &LinkConfig,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Self>, ConnectError> {
        let mut lasting = None;
        let mut last_error = None;
        for (broker, address) in config.brokers.iter().enumerate() {
            match connect_broker(
                address,
                config.connect_timeout,
                &config.token,
                config.tls.as_ref(),
            )
            .await
            {
                Ok(client) => {
                    if lasting.is_some() || last_error.is_some() {
                        tracing::info!("connected to the broker at {address}");
                    }
                    return Ok(Arc::new(Self {
                        config: config.clone(),
                        current: Mutex::new(Current {
                            generation: 0,
                            broker,
                            client,
                        }),
                        dialling: tokio::sync::Mutex::new(()),
                        gave_up: Mutex::new(None),
                        shutdown: shutdown.clone(),
                    }));
                }
                Err(error) => {
                    if broker + 1 < config.brokers.len() {
                        tracing::warn!(
                            "the broker at {address} is not reachable ({}); trying the next",
                            error.cause()
                        );
                    }
                    if lasting.is_none() && !error.is_transient() {
                        lasting = Some(error);
                    } else {
                        last_error = Some(error);
                    }
                }
            }
        }
        Err(lasting
            .or(last_error)
            .unwrap_or_else(|| ConnectError::Resolve {
                address: String::new(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "no broker address given",
                ),
            }))
    }

    /// The address of the broker in use.
    pub fn address(&self) -> String {
        self.config.brokers[self.current.lock().broker].clone()
    }

    /// The tries of a request that failed for now, as this link's settings have them: for at
    /// most `give_up_after`, and none once the program is stopping.
    pub fn retry(&self) -> Retry {
        Retry::new(Some(self.config.give_up_after), self.shutdown.clone())
    }

    /// Sends `request` with `send`, reconnecting and sending it again (a clone of it) as long
    /// as the connection is lost.
    pub async fn call<Q, T, F, Fut>(&self, request: &Q, send: F) -> Result<T, LinkError>
    where
        Q: Clone,
        F: Fn(BrokerClient, Q) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        loop {
            let current = self.current.lock().clone();
            match send(current.client, request.clone()).await {
                Err(error) if is_connection_lost(&error) => {
                    let address = &self.config.brokers[current.broker];
                    tracing::warn!(
                        "lost the broker at {address} ({}); reconnecting",
                        crate::words::describe(&error)
                    );
                    self.reconnect(current.generation, current.broker).await?;
                }
                result => return result.map_err(LinkError::from),
            }
        }
    }

    /// Sends `request` as [`BrokerLink::call`] does, and again while its answer failed for now
    /// ([`crate::retry::transient`]), with the pauses of [`BrokerLink::retry`]; each pause is
    /// logged with `action`, what was asked (`create the topic "multiply"`). Only for requests
    /// that may reach the broker twice: one that got no answer in time may have been served.
    pub async fn ask<Q, T, F, Fut>(
        &self,
        action: impl Fn() -> String,
        request: &Q,
        send: F,
    ) -> Settled<T>
    where
        Q: Clone,
        F: Fn(BrokerClient, Q) -> Fut,
        Fut: Future<Output = Result<Result<T, BrokerError>, RpcError>>,
    {
        let mut retry = self.retry();
        loop {
            let answer = self.call(request, &send).await;
            let cause = match transient_failure(&answer) {
                Some(cause) => cause.to_string(),
                None => {
                    return Settled {
                        answer,
                        ended: None,
                    }
                }
            };
            let waited = retry.wait(|pause| {
                tracing::warn!(
                    "the broker could not {} for now ({cause}); trying again in {}",
                    action(),
                    Rounded(pause)
                );
            });
            if let Err(ended) = waited.await {
                return Settled {
                    answer,
                    ended: Some(ended),
                };
            }
        }
    }

    /// Replaces the connection of `generation` (to broker number `lost`) with a new one, to
    /// the brokers in turn from the one after it, unless another caller has done so already.
    async fn reconnect(&self, generation: u64, lost: usize) -> Result<(), LinkError> {
        let mut retry = self.retry();
        let _dialling = tokio::select! {
            _ = retry.stopped() => return Err(LinkError::Stopped),
            dialling = self.dialling.lock() => dialling,
        };
        if self.current.lock().generation != generation {
            return Ok(());
        }
        let brokers = &self.config.brokers;
        let gone = |source| LinkError::Gone {
            address: brokers[lost].clone(),
            source,
        };
        let gave_up = self.gave_up.lock().clone();
        if let Some((given_up, source)) = gave_up {
            if given_up == generation {
                return Err(gone(source));
            }
        }
        let mut attempt = 0;
        loop {
            // One broker per attempt: the next ones first, the lost one last.
            let broker = (lost + 1 + attempt) % brokers.len();
            attempt += 1;
            let dialled = tokio::select! {
                _ = retry.stopped() => return Err(LinkError::Stopped),
                dialled = connect_broker(
                    &brokers[broker],
                    self.config.connect_timeout,
                    &self.config.token,
                    self.config.tls.as_ref(),
                ) => dialled,
            };
            let error = match dialled {
                Ok(client) => {
                    tracing::info!("connected to the broker at {} again", brokers[broker]);
                    *self.current.lock() = Current {
                        generation: generation + 1,
                        broker,
                        client,
                    };
                    return Ok(());
                }
                Err(error) => error,
            };
            let waited = retry.wait(|pause| {
                tracing::info!(
                    "no broker back yet ({}); trying again in {}",
                    error.cause(),
                    Rounded(pause)
                );
            });
            match waited.await {
                Ok(()) => {}
                Err(Ended::Stopped) => return Err(LinkError::Stopped),
                Err(Ended::GaveUp) => {
                    let source = Arc::new(error);
                    *self.gave_up.lock() = Some((generation, source.clone()));
                    return Err(gone(source));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
