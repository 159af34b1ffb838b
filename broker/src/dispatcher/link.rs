//! How a dispatcher reaches its factory: over tarpc, with batched procedures, or over Go's
//! net/rpc, one job a call.

use std::time::{Duration, Instant};

use stubs::{Callback, FactoryClient, Job, JobError, JobReport};
use tarpc::client::NewClient;
use tokio_util::sync::CancellationToken;

/// How the broker reaches a factory.
pub enum FactoryLink {
    /// pairbroker's own RPC, with its batched procedures.
    Tarpc(TarpcFactory),
    /// Go's net/rpc: one job a call, the callback called by its name.
    Go(crate::go::GoFactory),
}

impl FactoryLink {
    /// Waits until the connection to the factory has ended; while it is open, never returns.
    pub(super) async fn closed(&self) {
        match self {
            FactoryLink::Tarpc(factory) => factory.closed().await,
            FactoryLink::Go(factory) => factory.closed().await,
        }
    }

    /// One call for `jobs` to `callback`: the lab's single-job procedure for one job, its batch
    /// form for more (a Go factory, which has none, gets one call a job); a transport failure
    /// as a sentence.
    pub(super) async fn call(
        &self,
        callback: &Callback,
        context: tarpc::context::Context,
        jobs: Vec<Job>,
    ) -> Result<Vec<Result<JobReport, JobError>>, String> {
        let client = match self {
            FactoryLink::Tarpc(factory) => &factory.client,
            FactoryLink::Go(factory) => {
                let mut replies = Vec::with_capacity(jobs.len());
                for job in jobs {
                    replies.push(factory.call(callback.name(), job, context.deadline).await?);
                }
                return Ok(replies);
            }
        };
        let replies = match (callback, jobs.as_slice()) {
            (Callback::Multiply, &[job]) => {
                client.multiply(context, job).await.map(|reply| vec![reply])
            }
            (Callback::Divide, &[job]) => {
                client.divide(context, job).await.map(|reply| vec![reply])
            }
            (Callback::Multiply, _) => client.multiply_batch(context, jobs).await,
            (Callback::Divide, _) => client.divide_batch(context, jobs).await,
            // Refused at subscribe: a tarpc factory serves the lab's two procedures alone.
            (Callback::Named(name), _) => {
                return Err(format!("a pairbroker factory has no procedure {name}"))
            }
        };
        replies.map_err(|error| transport::words::describe(&error))
    }
}

/// A connection to a pairbroker factory over tarpc that knows when it has ended.
pub struct TarpcFactory {
    client: FactoryClient,
    /// Cancelled when the task that carries the connection's calls ends: the factory closed
    /// the connection (its process died), or reading or writing failed. tarpc's client says so
    /// only to a call, so the broker runs that task itself to hear of it without one.
    ended: CancellationToken,
}

impl TarpcFactory {
    /// A client over `stream`, a connection to the factory that has passed the handshake.
    /// Spawns the task that carries the calls, so it must be called within a tokio runtime.
    pub fn new(stream: transport::Stream) -> Self {
        let peer = stream.peer_addr().map_or_else(
            |_| "an address gone already".to_owned(),
            |peer| peer.to_string(),
        );
        let NewClient { client, dispatch } =
            FactoryClient::new(tarpc::client::Config::default(), transport::framed(stream));
        let ended = CancellationToken::new();
        let ending = ended.clone().drop_guard();
        tokio::spawn(async move {
            // Dropped however the task ends, a panic included.
            let _ending = ending;
            if let Err(error) = dispatch.await {
                tracing::debug!(
                    "the connection to the factory at {peer} failed: {}",
                    transport::words::cause(&error)
                );
            }
        });
        Self { client, ended }
    }

    /// Waits until the connection has ended. Every call on it fails from then on.
    pub async fn closed(&self) {
        self.ended.cancelled().await
    }
}

/// Whether `factory` takes batched calls for `callback`. A factory built before they existed
/// cannot read one and closes the connection, so the question is an empty batch, answered in
/// no time by a factory that can; after a `false`, the connection may be closed and the caller
/// should make a new one.
pub async fn accepts_batches(
    factory: &TarpcFactory,
    callback: &Callback,
    within: Duration,
) -> bool {
    let client = &factory.client;
    let mut context = tarpc::context::current();
    context.deadline = Instant::now() + within;
    let answer = match callback {
        Callback::Multiply => client.multiply_batch(context, Vec::new()).await,
        Callback::Divide => client.divide_batch(context, Vec::new()).await,
        Callback::Named(_) => return false,
    };
    matches!(answer, Ok(results) if results.is_empty())
}
