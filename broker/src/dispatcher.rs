//! A dispatcher: the loop of one subscription. It takes jobs from its topic, calls its factory
//! back with each (up to `prefetch` calls at once, each with a deadline) and settles every job
//! it took: completed, failed, or put back when the factory cannot be reached.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stubs::{FactoryClient, Job, JobError, JobReport};
use tarpc::client::RpcError;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{SubscriberMetrics, TopicMetrics};
use crate::outcome::{Callback, Observer, Outcome};
use crate::queue::{Delivery, JobStore, QueueError};

/// One subscription's dispatch loop and what it needs.
pub struct Dispatcher<S> {
    /// Where the jobs come from.
    pub store: Arc<S>,
    /// The topic taken from.
    pub topic: Arc<str>,
    /// The procedure called on the factory.
    pub callback: Callback,
    /// The factory's address, for output and logs.
    pub factory: Arc<str>,
    /// The connection to the factory.
    pub client: FactoryClient,
    /// How many calls may be in flight at once.
    pub prefetch: u32,
    /// How long a call may take before the job is put back.
    pub call_timeout: Duration,
    /// Hears of every outcome.
    pub observer: Observer,
    /// Cancelled to stop taking jobs; calls in flight still finish.
    pub stop: CancellationToken,
    /// The topic's latency and rate.
    pub topic_metrics: Arc<TopicMetrics>,
    /// This subscription's counters.
    pub subscriber_metrics: Arc<SubscriberMetrics>,
}

/// Why a dispatcher ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DispatcherEnd {
    /// It was told to stop (unsubscribe, replacement or shutdown).
    Stopped,
    /// A call failed in transport or passed its deadline.
    FactoryFailed(String),
    /// The store refused to hand out jobs.
    Store(QueueError),
}

struct Shared<S> {
    dispatcher: Dispatcher<S>,
    /// The first call failure, which ends the subscription.
    failure: Mutex<Option<String>>,
}

impl<S: JobStore> Dispatcher<S> {
    /// Dispatches until stopped or until a call fails, then waits for the calls in flight.
    pub async fn run(self) -> DispatcherEnd {
        let slots = Arc::new(Semaphore::new(self.prefetch as usize));
        let shared = Arc::new(Shared {
            dispatcher: self,
            failure: Mutex::new(None),
        });
        let this = &shared.dispatcher;
        let calls = TaskTracker::new();
        let end = loop {
            // Biased towards `stop`, so that no job is taken once stopping has begun. Both
            // `acquire_owned` and `take` are cancel-safe: dropped, they hold nothing.
            let slot = tokio::select! {
                biased;
                _ = this.stop.cancelled() => break DispatcherEnd::Stopped,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break DispatcherEnd::Stopped,
                },
            };
            let delivery = tokio::select! {
                biased;
                _ = this.stop.cancelled() => break DispatcherEnd::Stopped,
                taken = this.store.take(&this.topic) => match taken {
                    Ok(delivery) => delivery,
                    Err(error) => break DispatcherEnd::Store(error),
                },
            };
            let shared = shared.clone();
            calls.spawn(async move {
                shared.deliver(delivery).await;
                drop(slot);
            });
        };
        calls.close();
        calls.wait().await;
        let failure = shared
            .failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match (end, failure) {
            (DispatcherEnd::Stopped, Some(reason)) => DispatcherEnd::FactoryFailed(reason),
            (end, _) => end,
        }
    }
}

impl<S: JobStore> Shared<S> {
    async fn deliver(&self, delivery: Delivery) {
        let this = &self.dispatcher;
        tracing::debug!(
            topic = %this.topic,
            job_id = delivery.id,
            attempt = delivery.attempt,
            factory = %this.factory,
            callback = %this.callback,
            "calling the factory"
        );
        // tarpc gives up at the context's deadline; the timeout around it is a second bound
        // in case a reply is lost on a connection that stays open.
        let mut context = tarpc::context::current();
        context.deadline = Instant::now() + this.call_timeout;
        let counters = &this.subscriber_metrics;
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let reply = tokio::time::timeout(this.call_timeout, self.call(context, delivery.job)).await;
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        let reply = match reply {
            Ok(reply) => reply.map_err(|error| describe_rpc_error(&error)),
            Err(_) => Err(format!("no reply within {:?}", this.call_timeout)),
        };
        let (settled, outcome) = match reply {
            Ok(Ok(JobReport { result })) => {
                counters.completed.fetch_add(1, Ordering::Relaxed);
                this.topic_metrics.record_completion(delivery.published_at);
                (
                    this.store.complete(&delivery).await,
                    Outcome::Completed {
                        topic: this.topic.clone(),
                        job_id: delivery.id,
                        callback: this.callback,
                        job: delivery.job,
                        result,
                        factory: this.factory.clone(),
                    },
                )
            }
            Ok(Err(error)) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                (
                    this.store
                        .dead_letter(&delivery, error, &this.factory)
                        .await,
                    Outcome::Failed {
                        topic: this.topic.clone(),
                        job_id: delivery.id,
                        callback: this.callback,
                        job: delivery.job,
                        error,
                        factory: this.factory.clone(),
                    },
                )
            }
            Err(reason) => {
                tracing::warn!(
                    topic = %this.topic,
                    job_id = delivery.id,
                    factory = %this.factory,
                    callback = %this.callback,
                    %reason,
                    "call failed; the job goes back to its topic and the subscription ends"
                );
                self.failure
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .get_or_insert_with(|| reason.clone());
                this.stop.cancel();
                (
                    this.store.requeue(&delivery).await,
                    Outcome::Requeued {
                        topic: this.topic.clone(),
                        job_id: delivery.id,
                        callback: this.callback,
                        job: delivery.job,
                        reason,
                        factory: this.factory.clone(),
                    },
                )
            }
        };
        if let Err(error) = settled {
            // Only one dispatcher holds a delivery, so this means a bug, not a race.
            tracing::error!(%error, job_id = delivery.id, "cannot settle a delivery");
        }
        (this.observer)(&outcome);
    }

    async fn call(
        &self,
        context: tarpc::context::Context,
        job: Job,
    ) -> Result<Result<JobReport, JobError>, RpcError> {
        let this = &self.dispatcher;
        match this.callback {
            Callback::Multiply => this.client.multiply(context, job).await,
            Callback::Divide => this.client.divide(context, job).await,
        }
    }
}

/// Names a transport failure in a sentence, with its cause.
fn describe_rpc_error(error: &RpcError) -> String {
    use std::error::Error;
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
