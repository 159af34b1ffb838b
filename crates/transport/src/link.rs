//! [`BrokerLink`]: a connection to a broker that comes back by itself. tarpc has no
//! reconnect, so the miner and the factory share this one: when a call finds the connection
//! gone, the link dials again with capped exponential backoff and jitter, going round the
//! brokers it was given from the one after the lost one, and the call is made again on the new
//! connection. At start, it may wait for a broker that is not up yet, so that programs started
//! together need no order.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use stubs::BrokerClient;
use tarpc::client::RpcError;
use tokio::time::Instant;

use crate::words::Rounded;
use crate::{connect_broker, AccessToken, ConnectError, HandshakeError};

/// The first pause before dialling a lost broker again.
pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
/// The longest pause between two dials: a restarted broker is found within this long.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);
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
    /// How long to keep dialling once the broker went away, before giving up.
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

/// Whether a broker that could not be reached at start may yet come: nobody listening yet, a
/// broker still opening its store, or no answer in time. A name that does not resolve, a
/// refused token or a disagreement about TLS will not mend by waiting.
pub fn may_come_yet(error: &ConnectError) -> bool {
    match error {
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
    /// The call failed for another reason (e.g. its deadline passed).
    #[error("{}", crate::words::describe(.0))]
    Rpc(#[from] RpcError),
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
    current: Mutex<Current>,
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BrokerLink {
    /// Connects to the first of `config.brokers` that answers, trying each in turn. When none
    /// does, and every failure [`may_come_yet`], tries them all again with backoff until
    /// `config.wait_for_broker` has passed; otherwise (and with no wait) the error is the
    /// first that waiting would not mend, or the last one.
    pub async fn connect(config: &LinkConfig) -> Result<Arc<Self>, ConnectError> {
        let deadline = Instant::now() + config.wait_for_broker;
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(RECONNECT_MIN_DELAY)
            .with_max_delay(RECONNECT_MAX_DELAY)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let error = match Self::connect_once(config).await {
                Ok(link) => return Ok(link),
                Err(error) => error,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !may_come_yet(&error) {
                return Err(error);
            }
            let pause = pauses.next().unwrap_or(RECONNECT_MAX_DELAY).min(left);
            tracing::info!(
                "waiting for the broker at {}: {}; trying again in {}, for {} more at most",
                config.brokers.join(","),
                error.cause(),
                Rounded(pause),
                Rounded(left)
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// One try of each of `config.brokers`, in order.
    async fn connect_once(config: &LinkConfig) -> Result<Arc<Self>, ConnectError> {
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
                    }));
                }
                Err(error) => {
                    if broker + 1 < config.brokers.len() {
                        tracing::warn!(
                            "the broker at {address} is not reachable ({}); trying the next",
                            error.cause()
                        );
                    }
                    if lasting.is_none() && !may_come_yet(&error) {
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
        self.config.brokers[lock(&self.current).broker].clone()
    }

    /// Makes a call, reconnecting and calling again as long as the connection is lost.
    pub async fn call<T, F, Fut>(&self, request: F) -> Result<T, LinkError>
    where
        F: Fn(BrokerClient) -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        loop {
            let current = lock(&self.current).clone();
            match request(current.client).await {
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

    /// Replaces the connection of `generation` (to broker number `lost`) with a new one, to
    /// the brokers in turn from the one after it, unless another caller has done so already.
    async fn reconnect(&self, generation: u64, lost: usize) -> Result<(), LinkError> {
        let _dialling = self.dialling.lock().await;
        if lock(&self.current).generation != generation {
            return Ok(());
        }
        let brokers = &self.config.brokers;
        let gone = |source| LinkError::Gone {
            address: brokers[lost].clone(),
            source,
        };
        let gave_up = lock(&self.gave_up).clone();
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
            .with_total_delay(Some(self.config.give_up_after));
        let dials = std::sync::atomic::AtomicUsize::new(0);
        let dial = || async {
            // One broker per attempt: the next ones first, the lost one last.
            let attempt = dials.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let broker = (lost + 1 + attempt) % brokers.len();
            let address = &brokers[broker];
            connect_broker(
                address,
                self.config.connect_timeout,
                &self.config.token,
                self.config.tls.as_ref(),
            )
            .await
            .map(|client| (broker, client))
        };
        let (broker, client) = dial
            .retry(backoff)
            .notify(|error, pause| {
                tracing::info!(
                    "no broker back yet ({}); trying again in {}",
                    error.cause(),
                    Rounded(pause)
                );
            })
            .await
            .map_err(|source| {
                let source = Arc::new(source);
                *lock(&self.gave_up) = Some((generation, source.clone()));
                gone(source)
            })?;
        tracing::info!("connected to the broker at {} again", brokers[broker]);
        *lock(&self.current) = Current {
            generation: generation + 1,
            broker,
            client,
        };
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

    /// A server on `listener` that holds each connection it accepts until `stop`.
    fn serve(
        listener: tokio::net::TcpListener,
        admission: Admission,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let hold = {
            let stop = stop.clone();
            move |_stream, _| {
                let stop = stop.clone();
                async move { stop.cancelled().await }
            }
        };
        tokio::spawn(accept(listener, admission, stop, TaskTracker::new(), hold))
    }

    /// A free loopback port, nobody listening on it.
    async fn free_port() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn at_start_the_link_waits_for_a_broker_that_comes_up_and_gets_ready_later() {
        const COMES_UP_AFTER: Duration = Duration::from_millis(300);
        const READY_AFTER: Duration = Duration::from_millis(300);
        let address = free_port().await;
        let stop = CancellationToken::new();
        let broker = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(COMES_UP_AFTER).await;
                let listener = tokio::net::TcpListener::bind(address).await.unwrap();
                let not_ready = tokio::time::sleep(READY_AFTER);
                crate::starting::refuse_while(
                    &listener,
                    crate::starting::not_ready(None),
                    not_ready,
                )
                .await;
                serve(listener, Admission::default(), stop).await.unwrap();
            })
        };
        let config = LinkConfig {
            wait_for_broker: Duration::from_secs(30),
            ..LinkConfig::to(address.to_string())
        };
        let started = Instant::now();
        let link = BrokerLink::connect(&config).await;
        let waited = started.elapsed();
        assert!(link.is_ok(), "{:?}", link.err());
        assert!(waited >= COMES_UP_AFTER + READY_AFTER, "{waited:?}");
        // The backoff's longest pause, and a little for a busy machine.
        assert!(
            waited < COMES_UP_AFTER + READY_AFTER + RECONNECT_MAX_DELAY * 2,
            "{waited:?}"
        );
        stop.cancel();
        broker.await.unwrap();
    }

    #[tokio::test]
    async fn without_a_wait_a_broker_that_is_not_up_is_an_error_at_once() {
        let address = free_port().await;
        let started = Instant::now();
        let error = BrokerLink::connect(&LinkConfig::to(address.to_string()))
            .await
            .err();
        assert!(
            matches!(error, Some(ConnectError::Connect { .. })),
            "{error:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn the_wait_at_start_ends_with_the_last_error() {
        const WAIT: Duration = Duration::from_millis(500);
        let address = free_port().await;
        let config = LinkConfig {
            wait_for_broker: WAIT,
            ..LinkConfig::to(address.to_string())
        };
        let started = Instant::now();
        let error = BrokerLink::connect(&config).await.err();
        let waited = started.elapsed();
        assert!(
            matches!(error, Some(ConnectError::Connect { .. })),
            "{error:?}"
        );
        assert!(waited >= WAIT, "{waited:?}");
        assert!(waited < WAIT + Duration::from_secs(1), "{waited:?}");
    }

    #[tokio::test]
    async fn a_refused_token_or_a_name_that_does_not_resolve_is_not_waited_for() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let admission = Admission {
            token: AccessToken::new("s3cret").unwrap(),
            ..Admission::default()
        };
        let server = serve(listener, admission, stop.clone());
        let wrong_token = LinkConfig {
            wait_for_broker: Duration::from_secs(30),
            token: AccessToken::new("guess").unwrap(),
            ..LinkConfig::to(address.to_string())
        };
        // A broker that is down comes first in the list: it is not what the wait is for.
        let down = free_port().await;
        let both = LinkConfig {
            brokers: vec![down.to_string(), address.to_string()],
            ..wrong_token.clone()
        };
        let unknown = LinkConfig {
            wait_for_broker: Duration::from_secs(30),
            ..LinkConfig::to("no-such-host.invalid:8030")
        };
        let started = Instant::now();
        for config in [wrong_token, both] {
            let error = BrokerLink::connect(&config).await.err();
            assert!(
                matches!(
                    error,
                    Some(ConnectError::Handshake {
                        source: HandshakeError::WrongToken,
                        ..
                    })
                ),
                "{error:?}"
            );
        }
        let error = BrokerLink::connect(&unknown).await.err();
        assert!(
            matches!(error, Some(ConnectError::Resolve { .. })),
            "{error:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        stop.cancel();
        server.await.unwrap();
    }

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
        let link = BrokerLink::connect(&LinkConfig {
            connect_timeout: Duration::from_millis(100),
            give_up_after: Duration::from_millis(300),
            ..LinkConfig::to(address.to_string())
        })
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
