//! A pairbroker factory: the worker of the lab.
//!
//! - [`arithmetic`]: Multiply and Divide in checked arithmetic.
//! - [`service`]: the tarpc `Factory` service the broker calls back.
//! - [`pipeline`]: Part 2b, grouping Multiply results into new Divide jobs.
//! - [`membership`]: the factory's topics and subscriptions at the broker, kept while it works.
//! - [`cli`]: the command line of the `factory` program.
//!
//! [`run`] ties them together: serve, create the topics, subscribe, and on shutdown
//! unsubscribe, finish the calls in flight and flush the pipeline.

pub mod arithmetic;
pub mod cli;
pub mod membership;
pub mod pipeline;
pub mod service;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use lab_console::Console;
use stubs::{BrokerError, ChannelRequest, Factory as _, Subscription};
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use transport::{Admission, BrokerLink, ConnectError, LinkConfig, LinkError};

use crate::cli::LabTopic;
use crate::membership::Membership;
use crate::service::FactoryService;

/// The buffer of the topics a factory creates, as the lab's miner does.
pub const DEFAULT_BUFFER: u32 = 10;
/// How long a stopping factory waits for the broker to finish its calls in flight and close
/// its connections, and then for the pipeline to publish its last groups.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopping factory waits for the broker to take its unsubscribes.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a factory does.
#[derive(Clone, Debug)]
pub struct FactoryConfig {
    /// The brokers, and how to reach them; the token is also required of the broker's calls.
    pub link: LinkConfig,
    /// TLS to require of the broker's calls; none serves them in plain TCP.
    pub tls: Option<transport::ServerTls>,
    /// The address given to the broker, with the listener's port.
    pub ip: IpAddr,
    /// The topics to work on.
    pub topics: Vec<LabTopic>,
    /// Jobs in flight per subscription.
    pub prefetch: u32,
    /// The buffer of the topics created.
    pub buffer: u32,
    /// Whether Multiply results become Divide jobs.
    pub pipeline: bool,
}

/// Why a factory stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    /// The listener has no local address.
    #[error("cannot read the listening address: {0}")]
    Listener(#[source] std::io::Error),
    /// The broker cannot be reached.
    #[error("{}", lab_console::unreachable_broker(.0))]
    BrokerUnreachable(#[source] ConnectError),
    /// The broker went away and did not come back in time.
    #[error("{0}; start the broker again ({start}), then this factory", start = lab_console::how_to_start("broker"))]
    BrokerLost(#[source] LinkError),
    /// The broker refused a request.
    #[error("the broker refused to {action}: {error}")]
    Refused {
        /// What the factory asked for.
        action: String,
        /// Why it was refused.
        error: BrokerError,
    },
    /// A request to the broker failed.
    #[error("the broker did not answer a request to {action}: {error}")]
    Rpc {
        /// What the factory asked for.
        action: String,
        /// What went wrong.
        error: LinkError,
    },
}

/// Serves on `listener`, subscribes to the broker and works until `shutdown` is cancelled; then
/// unsubscribes, lets the calls in flight finish and publishes every complete pipeline group.
/// While it works it keeps its subscriptions: it reconnects to a restarted broker and
/// subscribes again when the broker has dropped it. A `shutdown` while it still waits for its
/// broker ends it at once.
pub async fn run(
    config: FactoryConfig,
    listener: TcpListener,
    console: Console,
    shutdown: CancellationToken,
) -> Result<(), FactoryError> {
    let port = listener
        .local_addr()
        .map_err(FactoryError::Listener)?
        .port();
    let address = SocketAddr::new(config.ip, port).to_string();
    let Some(broker) = BrokerLink::connect(&config.link, shutdown.clone())
        .await
        .map_err(FactoryError::BrokerUnreachable)?
    else {
        return Ok(());
    };
    let membership = membership(&config, &broker, &address);
    let (pipeline, pipeline_task) = if config.pipeline {
        let (input, task) = pipeline::spawn(
            broker.clone(),
            stubs::DIVIDE_TOPIC.to_owned(),
            console.clone(),
        );
        (Some(input), Some(task))
    } else {
        (None, None)
    };
    // Serve before subscribing: the broker's first call may come before subscribe returns.
    let server = Server::start(listener, &config, FactoryService::new(console, pipeline));

    let worked = match membership.join().await {
        Ok(()) => {
            tracing::info!("working on {address}");
            tokio::select! {
                _ = shutdown.cancelled() => Ok(()),
                kept = membership.keep(&shutdown) => kept,
            }
        }
        // Asked to stop while joining: not a failure.
        Err(_) if shutdown.is_cancelled() => Ok(()),
        Err(error) => Err(error),
    };

    tracing::info!("stopping: unsubscribing and finishing the calls in flight");
    // Bounded: with the broker gone, leaving would otherwise wait for it to come back.
    if worked.is_ok()
        && tokio::time::timeout(LEAVE_TIMEOUT, membership.leave())
            .await
            .is_err()
    {
        tracing::warn!("the broker did not answer the unsubscribes in time; stopping anyway");
    }
    server.stop().await;
    if let Some(task) = pipeline_task {
        finish_pipeline(task).await;
    }
    worked
}

/// The topics `config` works on (and `divide`, for the pipeline's jobs) and its subscriptions,
/// with the factory's `address`.
fn membership<'a>(config: &FactoryConfig, broker: &'a BrokerLink, address: &str) -> Membership<'a> {
    let mut topics_to_create = config.topics.clone();
    if config.pipeline && !topics_to_create.contains(&LabTopic::Divide) {
        topics_to_create.push(LabTopic::Divide);
    }
    Membership {
        broker,
        channels: topics_to_create
            .iter()
            .map(|topic| ChannelRequest {
                topic: topic.name().to_owned(),
                buffer: config.buffer,
            })
            .collect(),
        subscriptions: config
            .topics
            .iter()
            .map(|topic| Subscription {
                topic: topic.name().to_owned(),
                factory_address: address.to_owned(),
                callback: topic.callback().to_owned(),
                prefetch: config.prefetch,
            })
            .collect(),
    }
}

/// The factory's service to the broker's calls, on its own task.
struct Server {
    task: tokio::task::JoinHandle<()>,
    connections: TaskTracker,
    stop_accepting: CancellationToken,
    stop_connections: CancellationToken,
}

impl Server {
    /// Serves `service` on `listener`, with the token and TLS of `config`.
    fn start(listener: TcpListener, config: &FactoryConfig, service: FactoryService) -> Self {
        let connections = TaskTracker::new();
        let stop_accepting = CancellationToken::new();
        let stop_connections = CancellationToken::new();
        let handle = {
            let stop_connections = stop_connections.clone();
            move |stream, peer| {
                let service = service.clone();
                let stop_connections = stop_connections.clone();
                async move {
                    let requests = BaseChannel::with_defaults(transport::framed(stream))
                        .max_concurrent_requests(transport::DEFAULT_MAX_REQUESTS_PER_CONNECTION)
                        .execute(service.serve())
                        // The connection's calls run side by side in its own task: a task per
                        // call cost more than the arithmetic.
                        .for_each_concurrent(None, |call| call);
                    tokio::select! {
                        _ = requests => tracing::debug!("the broker's connection from {peer} closed"),
                        _ = stop_connections.cancelled() => {}
                    }
                }
            }
        };
        let admission = Admission {
            token: config.link.token.clone(),
            tls: config.tls.clone(),
            ..Admission::default()
        };
        let task = tokio::spawn(transport::accept(
            listener,
            admission,
            stop_accepting.clone(),
            connections.clone(),
            handle,
        ));
        Self {
            task,
            connections,
            stop_accepting,
            stop_connections,
        }
    }

    /// Stops accepting and waits for the broker to finish its calls in flight, at most
    /// [`DRAIN_TIMEOUT`]; then closes the connections it kept.
    async fn stop(self) {
        self.stop_accepting.cancel();
        let _ = self.task.await;
        self.connections.close();
        // The broker closes its connection once its dispatcher has finished the calls in flight.
        if tokio::time::timeout(DRAIN_TIMEOUT, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("the broker kept its connections open; closing them");
            self.stop_connections.cancel();
            self.connections.wait().await;
        }
    }
}

/// Waits for the pipeline to publish its last groups, at most [`DRAIN_TIMEOUT`].
async fn finish_pipeline(task: tokio::task::JoinHandle<pipeline::Leftovers>) {
    match tokio::time::timeout(DRAIN_TIMEOUT, task).await {
        Ok(Ok(leftovers)) if leftovers.is_empty() => {
            tracing::debug!("the pipeline published its last groups")
        }
        Ok(Ok(leftovers)) => tracing::info!("the pipeline stopped with {leftovers}"),
        Ok(Err(error)) => tracing::error!("the pipeline failed: {error}"),
        Err(_) => tracing::error!("the pipeline could not publish its last groups in time"),
    }
}
