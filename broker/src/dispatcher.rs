//! A dispatcher: the loop of one subscription. It takes jobs from its topic, calls its factory
//! back with each (up to `prefetch` calls at once, each with a deadline) and settles every job
//! it took: completed, failed, or put back when the factory cannot be reached.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
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
    /// How many jobs may be in flight at once.
    pub prefetch: u32,
    /// Whether the factory takes several jobs in one call (see [`accepts_batches`]).
    pub batches: bool,
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
            // The jobs that are ready now, up to the free slots, go in the same call: under
            // load one call carries many jobs, and a call costs both ends far more than a job
            // (profile, issue 5). `take` polled once is cancel-safe: not ready, it takes nothing.
            let mut deliveries = vec![delivery];
            let mut slot = slot;
            while this.batches && !this.stop.is_cancelled() {
                let Ok(next_slot) = slots.clone().try_acquire_owned() else {
                    break;
                };
                match this.store.take(&this.topic).now_or_never() {
                    Some(Ok(delivery)) => {
                        deliveries.push(delivery);
                        slot.merge(next_slot);
                    }
                    _ => break,
                }
            }
            let shared = shared.clone();
            calls.spawn(async move {
                shared.deliver(deliveries).await;
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
    /// Calls the factory once with `deliveries` (in one `multiply_batch` or `divide_batch` call
    /// when there are several) and settles each.
    async fn deliver(&self, deliveries: Vec<Delivery>) {
        let this = &self.dispatcher;
        let jobs: Vec<Job> = deliveries.iter().map(|delivery| delivery.job).collect();
        tracing::debug!(
            topic = %this.topic,
            first_job_id = deliveries[0].id,
            jobs = jobs.len(),
            factory = %this.factory,
            callback = %this.callback,
            "calling the factory"
        );
        // tarpc gives up at the context's deadline; the timeout around it is a second bound
        // in case a reply is lost on a connection that stays open.
        let mut context = tarpc::context::current();
        context.deadline = Instant::now() + this.call_timeout;
        let counters = &this.subscriber_metrics;
        let count = jobs.len() as u64;
        counters.in_flight.fetch_add(count, Ordering::Relaxed);
        let reply = tokio::time::timeout(this.call_timeout, self.call(context, jobs)).await;
        counters.in_flight.fetch_sub(count, Ordering::Relaxed);
        let replies = match reply {
            Ok(Ok(replies)) if replies.len() == deliveries.len() => Ok(replies),
            Ok(Ok(replies)) => Err(format!(
                "the factory answered {} results for {} jobs",
                replies.len(),
                deliveries.len()
            )),
            Ok(Err(error)) => Err(describe_rpc_error(&error)),
            Err(_) => Err(format!("no reply within {:?}", this.call_timeout)),
        };
        match replies {
            Ok(replies) => {
                // Together: a store that settles over the network (JetStream) waits for one
                // round trip for the whole batch instead of one per job.
                let settled = deliveries
                    .iter()
                    .zip(replies)
                    .map(|(delivery, reply)| self.settle(delivery, reply));
                futures::future::join_all(settled).await;
            }
            Err(reason) => {
                tracing::warn!(
                    topic = %this.topic,
                    first_job_id = deliveries[0].id,
                    jobs = deliveries.len(),
                    factory = %this.factory,
                    callback = %this.callback,
                    %reason,
                    "call failed; the jobs go back to their topic and the subscription ends"
                );
                self.failure
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .get_or_insert_with(|| reason.clone());
                this.stop.cancel();
                // Back at the head in one step, in the order they were taken.
                let requeued = this.store.requeue_all(&deliveries).await;
                for delivery in &deliveries {
                    self.report(
                        requeued.clone(),
                        delivery,
                        Outcome::Requeued {
                            topic: this.topic.clone(),
                            job_id: delivery.id,
                            callback: this.callback,
                            job: delivery.job,
                            reason: reason.clone(),
                            factory: this.factory.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Settles a job the factory answered: completed, or dead-lettered with its job error.
    async fn settle(&self, delivery: &Delivery, reply: Result<JobReport, JobError>) {
        let this = &self.dispatcher;
        let counters = &this.subscriber_metrics;
        match reply {
            Ok(JobReport { result }) => {
                counters.completed.fetch_add(1, Ordering::Relaxed);
                this.topic_metrics.record_completion(delivery.published_at);
                let completed = this.store.complete(delivery).await;
                self.report(
                    completed,
                    delivery,
                    Outcome::Completed {
                        topic: this.topic.clone(),
                        job_id: delivery.id,
                        callback: this.callback,
                        job: delivery.job,
                        result,
                        factory: this.factory.clone(),
                    },
                );
            }
            Err(error) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                let dead = this
                    .store
                    .dead_letter(delivery, error.clone(), &this.factory)
                    .await;
                self.report(
                    dead,
                    delivery,
                    Outcome::Failed {
                        topic: this.topic.clone(),
                        job_id: delivery.id,
                        callback: this.callback,
                        job: delivery.job,
                        error,
                        factory: this.factory.clone(),
                    },
                );
            }
        }
    }

    fn report(&self, settled: Result<(), QueueError>, delivery: &Delivery, outcome: Outcome) {
        if let Err(error) = settled {
            // Only one dispatcher holds a delivery, so this means a bug, not a race.
            tracing::error!(%error, job_id = delivery.id, "cannot settle a delivery");
        }
        (self.dispatcher.observer)(&outcome);
    }

    /// One call for `jobs`: the lab's single-job procedure for one job, its batch form for more.
    async fn call(
        &self,
        context: tarpc::context::Context,
        jobs: Vec<Job>,
    ) -> Result<Vec<Result<JobReport, JobError>>, RpcError> {
        let this = &self.dispatcher;
        match (this.callback, jobs.as_slice()) {
            (Callback::Multiply, &[job]) => Ok(vec![this.client.multiply(context, job).await?]),
            (Callback::Divide, &[job]) => Ok(vec![this.client.divide(context, job).await?]),
            (Callback::Multiply, _) => this.client.multiply_batch(context, jobs).await,
            (Callback::Divide, _) => this.client.divide_batch(context, jobs).await,
        }
    }
}

/// Whether the factory behind `client` takes batched calls for `callback`. A factory built
/// before they existed cannot read one and closes the connection, so the question is an empty
/// batch, answered in no time by a factory that can; after a `false`, the connection may be
/// closed and the caller should make a new one.
pub async fn accepts_batches(client: &FactoryClient, callback: Callback, within: Duration) -> bool {
    let mut context = tarpc::context::current();
    context.deadline = Instant::now() + within;
    let answer = match callback {
        Callback::Multiply => client.multiply_batch(context, Vec::new()).await,
        Callback::Divide => client.divide_batch(context, Vec::new()).await,
    };
    matches!(answer, Ok(results) if results.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{SubscriberMetrics, TopicMetrics};
    use crate::queue::MemoryStore;
    use futures::StreamExt;
    use stubs::{Factory, Pair};
    use tarpc::server::{BaseChannel, Channel};

    /// A factory that records the size of each call and answers none in time.
    #[derive(Clone)]
    struct SlowFactory {
        calls: Arc<Mutex<Vec<usize>>>,
    }

    impl SlowFactory {
        async fn hang(&self, jobs: usize) {
            self.calls.lock().unwrap().push(jobs);
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }

    impl Factory for SlowFactory {
        async fn multiply(self, _: tarpc::context::Context, _: Job) -> Result<JobReport, JobError> {
            self.hang(1).await;
            Err(JobError::Overflow)
        }
        async fn divide(self, _: tarpc::context::Context, _: Job) -> Result<JobReport, JobError> {
            self.hang(1).await;
            Err(JobError::Overflow)
        }
        async fn multiply_batch(
            self,
            _: tarpc::context::Context,
            jobs: Vec<Job>,
        ) -> Vec<Result<JobReport, JobError>> {
            self.hang(jobs.len()).await;
            Vec::new()
        }
        async fn divide_batch(
            self,
            _: tarpc::context::Context,
            jobs: Vec<Job>,
        ) -> Vec<Result<JobReport, JobError>> {
            self.hang(jobs.len()).await;
            Vec::new()
        }
    }

    #[tokio::test]
    async fn ready_jobs_go_in_one_call_and_a_failed_call_puts_them_all_back_in_order() {
        let store = Arc::new(MemoryStore::new());
        store.create_topic("t", 100).await.unwrap();
        let mut ids = Vec::new();
        for x in 0..5 {
            ids.push(
                store
                    .publish(
                        "t",
                        Pair { x, y: 1 }.into(),
                        tokio::time::Instant::now() + Duration::from_secs(60),
                    )
                    .await
                    .unwrap(),
            );
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let factory = SlowFactory {
            calls: Arc::default(),
        };
        let server = factory.clone();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            BaseChannel::with_defaults(transport::framed(stream))
                .execute(server.serve())
                .for_each_concurrent(None, |call| call)
                .await;
        });
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let client = FactoryClient::new(Default::default(), transport::framed(stream)).spawn();

        let dispatcher = Dispatcher {
            store: store.clone(),
            topic: Arc::from("t"),
            callback: Callback::Multiply,
            factory: Arc::from(address.to_string()),
            client,
            prefetch: 8,
            batches: true,
            call_timeout: Duration::from_millis(200),
            observer: Arc::new(|_| {}),
            stop: CancellationToken::new(),
            topic_metrics: Arc::new(TopicMetrics::default()),
            subscriber_metrics: Arc::new(SubscriberMetrics::new(8)),
        };
        let end = dispatcher.run().await;
        assert!(
            matches!(&end, DispatcherEnd::FactoryFailed(reason) if reason.contains("no reply")),
            "{end:?}"
        );
        assert_eq!(
            *factory.calls.lock().unwrap(),
            vec![5],
            "one call for the five jobs"
        );

        let stats = store.stats("t").await.unwrap();
        assert_eq!((stats.ready, stats.in_flight, stats.requeued), (5, 0, 5));
        let mut again = Vec::new();
        for _ in 0..5 {
            let delivery = store.take("t").await.unwrap();
            assert_eq!(delivery.attempt, 2);
            again.push(delivery.id);
        }
        assert_eq!(again, ids, "back at the head in the order they had");
    }
}
