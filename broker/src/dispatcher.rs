//! A dispatcher: the loop of one subscription. It takes jobs from its topic, calls its factory
//! back with each (up to `prefetch` calls at once, each with a deadline) and settles every job
//! it took: completed, failed, or put back when the factory cannot be reached (dead-lettered
//! instead once the job has been delivered as often as the broker allows). A subscription whose
//! factory's connection closes ends too, even with no call in flight to find out.

use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use stubs::{FactoryClient, Job, JobError, JobReport};
use tarpc::client::NewClient;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    pub client: FactoryLink,
    /// How many jobs may be in flight at once.
    pub prefetch: u32,
    /// Whether the factory takes several jobs in one call (see [`accepts_batches`]).
    pub batches: bool,
    /// How long a call may take before the job is put back.
    pub call_timeout: Duration,
    /// How many times a job may be delivered before a failed call dead-letters it instead of
    /// putting it back (`None`: no limit).
    pub max_deliveries: Option<NonZeroU32>,
    /// Hears of every outcome.
    pub observer: Observer,
    /// Cancelled to stop taking jobs; calls in flight still finish.
    pub stop: CancellationToken,
    /// The topic's latency and rate.
    pub topic_metrics: Arc<TopicMetrics>,
    /// This subscription's counters.
    pub subscriber_metrics: Arc<SubscriberMetrics>,
}

/// How the broker reaches a factory.
pub enum FactoryLink {
    /// pairbroker's own RPC, with its batched procedures.
    Tarpc(TarpcFactory),
    /// Go's net/rpc: one job a call, the callback called by its name.
    Go(crate::go::GoFactory),
}

impl FactoryLink {
    /// Waits until the connection to the factory has ended; while it is open, never returns.
    async fn closed(&self) {
        match self {
            FactoryLink::Tarpc(factory) => factory.closed().await,
            FactoryLink::Go(factory) => factory.closed().await,
        }
    }
}

/// Why a subscription ended when its factory's connection closed with no call on it to fail.
const CONNECTION_CLOSED: &str = "the connection to the factory closed";

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
        let peer = stream.peer_addr().ok();
        let NewClient { client, dispatch } =
            FactoryClient::new(tarpc::client::Config::default(), transport::framed(stream));
        let ended = CancellationToken::new();
        let ending = ended.clone().drop_guard();
        tokio::spawn(async move {
            // Dropped however the task ends, a panic included.
            let _ending = ending;
            if let Err(error) = dispatch.await {
                tracing::debug!(factory = ?peer, "the connection to the factory failed: {}", transport::words::cause(&error));
            }
        });
        Self { client, ended }
    }

    /// Waits until the connection has ended. Every call on it fails from then on.
    pub async fn closed(&self) {
        self.ended.cancelled().await
    }
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
        // A factory that dies while this subscription has no call in flight (its topic idle
        // while its others are busy) fails no call, and would stay listed until its next job.
        // Made once, and polled only while no job is ready: it costs nothing per job.
        let mut closed = std::pin::pin!(this.client.closed());
        // A job taken while a batch was filled that must go in a call of its own: the next
        // call's. Taken, it is delivered, stopping or not.
        let mut set_aside: Option<(OwnedSemaphorePermit, Delivery)> = None;
        let end = loop {
            let (mut slot, delivery) = match set_aside.take() {
                Some(taken) => taken,
                None => {
                    // Biased towards `stop`, so that no job is taken once stopping has begun.
                    // Both `acquire_owned` and `take` are cancel-safe: dropped, they hold nothing.
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
                        // The calls in flight, if any, fail by themselves; `take`, dropped, has
                        // taken nothing.
                        () = closed.as_mut() => {
                            break DispatcherEnd::FactoryFailed(CONNECTION_CLOSED.to_owned())
                        }
                    };
                    (slot, delivery)
                }
            };
            let mut deliveries = vec![delivery];
            if deliveries[0].attempt > 1 {
                // A job delivered before goes alone, with no other call of this subscription
                // in flight: should it be the job that brings its factory down, the jobs beside
                // it are not charged with its failed deliveries, nor it with theirs. The calls
                // in flight end by their deadline.
                if let Ok(others) = slots
                    .clone()
                    .acquire_many_owned(this.prefetch.saturating_sub(1))
                    .await
                {
                    slot.merge(others);
                }
            } else {
                // The jobs that are ready now, up to the free slots, go in the same call: under
                // load one call carries many jobs, and a call costs both ends far more than a
                // job (a profile showed it). `take` polled once is cancel-safe: not ready, it takes
                // nothing.
                while this.batches && !this.stop.is_cancelled() {
                    let Ok(next_slot) = slots.clone().try_acquire_owned() else {
                        break;
                    };
                    match this.store.take(&this.topic).now_or_never() {
                        Some(Ok(delivery)) if delivery.attempt > 1 => {
                            set_aside = Some((next_slot, delivery));
                            break;
                        }
                        Some(Ok(delivery)) => {
                            deliveries.push(delivery);
                            slot.merge(next_slot);
                        }
                        _ => break,
                    }
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
            // A failed call says more than the closed connection seen beside it.
            (DispatcherEnd::Stopped | DispatcherEnd::FactoryFailed(_), Some(reason)) => {
                DispatcherEnd::FactoryFailed(reason)
            }
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
            Ok(Err(reason)) => Err(reason),
            Err(_) => Err(format!(
                "no reply within {}",
                lab_console::Rounded(this.call_timeout)
            )),
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
                    "{} at {} failed on {} of {:?}: {reason}; the subscription ends, and the \
                     jobs go back to the topic unless delivered as often as allowed",
                    this.callback,
                    this.factory,
                    jobs_text(&deliveries),
                    this.topic
                );
                self.failure
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .get_or_insert_with(|| reason.clone());
                this.stop.cancel();
                // The jobs delivered as often as allowed are given up on before they go back:
                // such a job may be what brings its factories down.
                let (spent, deliveries): (Vec<Delivery>, Vec<Delivery>) = deliveries
                    .into_iter()
                    .partition(|delivery| self.is_spent(delivery));
                for delivery in &spent {
                    self.give_up(delivery, &reason).await;
                }
                // Back at the head in one step, in the order they were taken.
                let requeued = this.store.requeue_all(&deliveries).await;
                for delivery in &deliveries {
                    self.report(
                        requeued.clone(),
                        delivery,
                        Outcome::Requeued {
                            topic: this.topic.clone(),
                            job_id: delivery.id,
                            callback: this.callback.clone(),
                            job: delivery.job,
                            reason: reason.clone(),
                            factory: this.factory.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Whether `delivery` was the last one the limit allows.
    fn is_spent(&self, delivery: &Delivery) -> bool {
        self.dispatcher
            .max_deliveries
            .is_some_and(|limit| delivery.attempt >= limit.get())
    }

    /// Dead-letters a job whose call failed on its last allowed delivery.
    async fn give_up(&self, delivery: &Delivery, reason: &str) {
        let this = &self.dispatcher;
        tracing::warn!(
            "job {} of {:?} ({}) was delivered {} times and its calls failed, the last at {}: \
             {reason}; it is dead-lettered instead of going back to its topic",
            delivery.id,
            this.topic,
            delivery.job,
            delivery.attempt,
            this.factory
        );
        let error = JobError::Undeliverable {
            deliveries: delivery.attempt,
            reason: reason.to_owned(),
        };
        let dead = this.store.dead_letter(delivery, error, &this.factory).await;
        self.report(
            dead,
            delivery,
            Outcome::Undeliverable {
                topic: this.topic.clone(),
                job_id: delivery.id,
                callback: this.callback.clone(),
                job: delivery.job,
                deliveries: delivery.attempt,
                reason: reason.to_owned(),
                factory: this.factory.clone(),
            },
        );
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
                        callback: this.callback.clone(),
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
                        callback: this.callback.clone(),
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
            tracing::error!("cannot settle job {}: {error}", delivery.id);
        }
        (self.dispatcher.observer)(&outcome);
    }

    /// One call for `jobs`: the lab's single-job procedure for one job, its batch form for more
    /// (a Go factory, which has none, gets one call a job); a transport failure as a sentence.
    async fn call(
        &self,
        context: tarpc::context::Context,
        jobs: Vec<Job>,
    ) -> Result<Vec<Result<JobReport, JobError>>, String> {
        let this = &self.dispatcher;
        let client = match &this.client {
            FactoryLink::Tarpc(factory) => &factory.client,
            FactoryLink::Go(factory) => {
                let mut replies = Vec::with_capacity(jobs.len());
                for job in jobs {
                    replies.push(
                        factory
                            .call(this.callback.name(), job, context.deadline)
                            .await?,
                    );
                }
                return Ok(replies);
            }
        };
        let replies = match (&this.callback, jobs.as_slice()) {
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

/// The jobs of one call, as a log line names them: `job 7`, or `jobs 7 and 3 more`.
fn jobs_text(deliveries: &[Delivery]) -> String {
    match deliveries {
        [one] => format!("job {}", one.id),
        [first, rest @ ..] => format!("jobs {} and {} more", first.id, rest.len()),
        [] => "no job".to_owned(),
    }
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
        let client = FactoryLink::Tarpc(TarpcFactory::new(stream.into()));

        let dispatcher = Dispatcher {
            store: store.clone(),
            topic: Arc::from("t"),
            callback: Callback::Multiply,
            factory: Arc::from(address.to_string()),
            client,
            prefetch: 8,
            batches: true,
            call_timeout: Duration::from_millis(200),
            max_deliveries: None,
            observer: Arc::new(|_| {}),
            stop: CancellationToken::new(),
            topic_metrics: Arc::new(TopicMetrics::default()),
            subscriber_metrics: Arc::new(SubscriberMetrics::new(8, stubs::Protocol::Tarpc)),
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

    /// How long a test waits for a condition before it fails.
    const WAIT: Duration = Duration::from_secs(10);
    /// How often a test looks at the store while it waits.
    const POLL: Duration = Duration::from_millis(10);

    type Calls = Arc<Mutex<Vec<Vec<Job>>>>;
    type Outcomes = Arc<Mutex<Vec<Outcome>>>;

    /// A factory that divides, but whose connection closes on a zero divisor, as a Go factory's
    /// process ends on one. It records the jobs of every call.
    #[derive(Clone)]
    struct FragileFactory {
        /// Cancelled to close this connection.
        dies: CancellationToken,
        calls: Calls,
    }

    impl FragileFactory {
        async fn answer(&self, jobs: Vec<Job>) -> Vec<Result<JobReport, JobError>> {
            self.calls.lock().unwrap().push(jobs.clone());
            if jobs
                .iter()
                .any(|job| matches!(job, Job::Pair(Pair { y: 0, .. })))
            {
                self.dies.cancel();
                std::future::pending::<()>().await;
            }
            jobs.into_iter()
                .map(|job| match job {
                    Job::Pair(Pair { x, y }) => Ok(JobReport { result: x / y }),
                    Job::Triplet(_) => Err(JobError::Overflow),
                })
                .collect()
        }
    }

    impl Factory for FragileFactory {
        async fn multiply(
            self,
            _: tarpc::context::Context,
            job: Job,
        ) -> Result<JobReport, JobError> {
            self.answer(vec![job]).await.remove(0)
        }
        async fn divide(self, _: tarpc::context::Context, job: Job) -> Result<JobReport, JobError> {
            self.answer(vec![job]).await.remove(0)
        }
        async fn multiply_batch(
            self,
            _: tarpc::context::Context,
            jobs: Vec<Job>,
        ) -> Vec<Result<JobReport, JobError>> {
            self.answer(jobs).await
        }
        async fn divide_batch(
            self,
            _: tarpc::context::Context,
            jobs: Vec<Job>,
        ) -> Vec<Result<JobReport, JobError>> {
            self.answer(jobs).await
        }
    }

    /// Serves a [`FragileFactory`] on every connection to a new loopback port: its address, and
    /// the jobs of every call it gets.
    async fn fragile_factory() -> (std::net::SocketAddr, Calls) {
        fragile_factory_closed_by(CancellationToken::new()).await
    }

    /// [`fragile_factory`], whose connections all close, as its process's would in dying, when
    /// `closes` is cancelled.
    async fn fragile_factory_closed_by(closes: CancellationToken) -> (std::net::SocketAddr, Calls) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let calls = Calls::default();
        let recorded = calls.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let dies = closes.child_token();
                let factory = FragileFactory {
                    dies: dies.clone(),
                    calls: recorded.clone(),
                };
                tokio::spawn(async move {
                    let serving = BaseChannel::with_defaults(transport::framed(stream))
                        .execute(factory.serve())
                        .for_each_concurrent(None, |call| call);
                    // Dropped, the connection closes with its calls unanswered.
                    tokio::select! {
                        _ = serving => {}
                        _ = dies.cancelled() => {}
                    }
                });
            }
        });
        (address, calls)
    }

    /// A new subscription of the factory at `address` to topic `t` of `store`, on a connection
    /// of its own, calling `Factory.Divide`.
    async fn subscription(
        store: &Arc<MemoryStore>,
        address: std::net::SocketAddr,
        prefetch: u32,
        max_deliveries: Option<NonZeroU32>,
        outcomes: &Outcomes,
    ) -> Dispatcher<MemoryStore> {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let client = FactoryLink::Tarpc(TarpcFactory::new(stream.into()));
        let outcomes = outcomes.clone();
        Dispatcher {
            store: store.clone(),
            topic: Arc::from("t"),
            callback: Callback::Divide,
            factory: Arc::from(address.to_string()),
            client,
            prefetch,
            batches: prefetch > 1,
            call_timeout: WAIT,
            max_deliveries,
            observer: Arc::new(move |outcome| outcomes.lock().unwrap().push(outcome.clone())),
            stop: CancellationToken::new(),
            topic_metrics: Arc::default(),
            subscriber_metrics: Arc::new(SubscriberMetrics::new(prefetch, stubs::Protocol::Tarpc)),
        }
    }

    /// Runs `dispatcher` until a call fails, as one must within [`WAIT`]: why it failed.
    async fn until_a_call_fails(dispatcher: Dispatcher<MemoryStore>) -> String {
        match tokio::time::timeout(WAIT, dispatcher.run()).await {
            Ok(DispatcherEnd::FactoryFailed(reason)) => reason,
            other => panic!("the subscription ended otherwise: {other:?}"),
        }
    }

    /// Waits until topic `t` of `store` has `completed` jobs completed.
    async fn wait_until_completed(store: &MemoryStore, completed: u64) {
        let deadline = Instant::now() + WAIT;
        while store.stats("t").await.unwrap().completed < completed {
            assert!(
                Instant::now() < deadline,
                "{completed} jobs were not completed within {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `dispatcher` until topic `t` has `completed` jobs completed, then stops it.
    async fn until_completed(dispatcher: Dispatcher<MemoryStore>, completed: u64) {
        let (store, stop) = (dispatcher.store.clone(), dispatcher.stop.clone());
        let running = tokio::spawn(dispatcher.run());
        wait_until_completed(&store, completed).await;
        stop.cancel();
        assert_eq!(running.await.unwrap(), DispatcherEnd::Stopped);
    }

    async fn store_with(jobs: &[Pair]) -> (Arc<MemoryStore>, Vec<u64>) {
        let store = Arc::new(MemoryStore::new());
        store.create_topic("t", 10).await.unwrap();
        let mut ids = Vec::new();
        for &pair in jobs {
            let room_by = tokio::time::Instant::now() + WAIT;
            ids.push(store.publish("t", pair.into(), room_by).await.unwrap());
        }
        (store, ids)
    }

    #[tokio::test]
    async fn a_job_whose_calls_keep_failing_is_dead_lettered_on_its_last_allowed_delivery() {
        let poison = Pair { x: 5, y: 0 };
        let (store, ids) = store_with(&[Pair { x: 10, y: 2 }, poison, Pair { x: 9, y: 3 }]).await;
        let (address, _) = fragile_factory().await;
        let outcomes = Outcomes::default();
        let limit = NonZeroU32::new(3);

        let mut reason = String::new();
        for _ in 0..3 {
            reason =
                until_a_call_fails(subscription(&store, address, 1, limit, &outcomes).await).await;
        }
        until_completed(subscription(&store, address, 1, limit, &outcomes).await, 2).await;

        let stats = store.stats("t").await.unwrap();
        assert_eq!(
            (
                stats.completed,
                stats.failed,
                stats.undeliverable,
                stats.requeued,
                stats.ready,
                stats.in_flight
            ),
            (2, 1, 1, 2, 0, 0)
        );
        let dead = store.dead_letters("t").await.unwrap();
        assert_eq!(dead.letters.len(), 1);
        assert_eq!(dead.letters[0].job_id, ids[1]);
        assert_eq!(
            dead.letters[0].error,
            JobError::Undeliverable {
                deliveries: 3,
                reason: reason.clone()
            }
        );
        let lines: Vec<String> = outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|outcome| !matches!(outcome, Outcome::Requeued { .. }))
            .map(|outcome| outcome.to_string())
            .collect();
        assert_eq!(
            lines,
            [
                "Factory.Divide of 10 and 2 is 5".to_owned(),
                format!("Factory.Divide of 5 and 0 dead-lettered: delivered 3 times; every call failed: {reason}"),
                "Factory.Divide of 9 and 3 is 3".to_owned(),
            ]
        );
    }

    #[tokio::test]
    async fn with_no_limit_a_job_whose_calls_keep_failing_always_goes_back() {
        let (store, ids) = store_with(&[Pair { x: 5, y: 0 }]).await;
        let (address, calls) = fragile_factory().await;
        let outcomes = Outcomes::default();
        for _ in 0..6 {
            until_a_call_fails(subscription(&store, address, 1, None, &outcomes).await).await;
        }
        assert_eq!(calls.lock().unwrap().len(), 6);
        let stats = store.stats("t").await.unwrap();
        assert_eq!(
            (
                stats.requeued,
                stats.failed,
                stats.undeliverable,
                stats.ready
            ),
            (6, 0, 0, 1)
        );
        let again = store.take("t").await.unwrap();
        assert_eq!((again.id, again.attempt), (ids[0], 7));
    }

    #[tokio::test]
    async fn a_job_delivered_before_goes_alone_so_the_jobs_beside_it_are_not_dead_lettered() {
        let jobs = [
            Pair { x: 1, y: 1 },
            Pair { x: 5, y: 0 },
            Pair { x: 2, y: 1 },
            Pair { x: 3, y: 1 },
        ];
        let (store, ids) = store_with(&jobs).await;
        let (address, calls) = fragile_factory().await;
        let outcomes = Outcomes::default();
        let limit = NonZeroU32::new(2);

        // All four in one call, which the zero divisor brings down: all four go back.
        until_a_call_fails(subscription(&store, address, 4, limit, &outcomes).await).await;
        // Delivered before, each goes alone: the zero divisor is given up on by itself.
        until_a_call_fails(subscription(&store, address, 4, limit, &outcomes).await).await;
        until_completed(subscription(&store, address, 4, limit, &outcomes).await, 3).await;

        let alone = |pair: Pair| vec![Job::from(pair)];
        assert_eq!(
            *calls.lock().unwrap(),
            vec![
                jobs.map(Job::from).to_vec(),
                alone(jobs[0]),
                alone(jobs[1]),
                alone(jobs[2]),
                alone(jobs[3]),
            ]
        );
        let stats = store.stats("t").await.unwrap();
        assert_eq!(
            (stats.completed, stats.undeliverable, stats.requeued),
            (3, 1, 4)
        );
        let dead = store.dead_letters("t").await.unwrap();
        let dead: Vec<u64> = dead.letters.iter().map(|letter| letter.job_id).collect();
        assert_eq!(dead, [ids[1]]);
    }

    #[tokio::test]
    async fn a_subscription_with_nothing_in_flight_ends_when_its_factory_closes_the_connection() {
        let (store, _) = store_with(&[Pair { x: 8, y: 2 }]).await;
        let closes = CancellationToken::new();
        let (address, calls) = fragile_factory_closed_by(closes.clone()).await;
        let outcomes = Outcomes::default();
        let running = tokio::spawn(
            subscription(&store, address, 4, None, &outcomes)
                .await
                .run(),
        );
        wait_until_completed(&store, 1).await;

        // The factory's process dies while its subscription waits for a job.
        closes.cancel();
        let end = tokio::time::timeout(WAIT, running)
            .await
            .expect("the subscription ends without a call to find out")
            .unwrap();
        assert_eq!(
            end,
            DispatcherEnd::FactoryFailed(CONNECTION_CLOSED.to_owned())
        );

        // It took nothing in ending: the next job waits for its first delivery.
        let room_by = tokio::time::Instant::now() + WAIT;
        let id = store
            .publish("t", Pair { x: 9, y: 3 }.into(), room_by)
            .await
            .unwrap();
        let stats = store.stats("t").await.unwrap();
        assert_eq!((stats.ready, stats.in_flight, stats.requeued), (1, 0, 0));
        let next = store.take("t").await.unwrap();
        assert_eq!((next.id, next.attempt), (id, 1));
        assert_eq!(calls.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_live_factory_with_nothing_to_do_keeps_its_subscription_and_gets_the_next_job() {
        /// Far longer than any timer of the broker's; the clock is paused while it passes.
        const IDLE: Duration = Duration::from_secs(24 * 3600);
        let (store, _) = store_with(&[]).await;
        let (address, calls) = fragile_factory().await;
        let outcomes = Outcomes::default();
        let dispatcher = subscription(&store, address, 4, None, &outcomes).await;
        let stop = dispatcher.stop.clone();
        let running = tokio::spawn(dispatcher.run());

        tokio::time::pause();
        tokio::time::sleep(IDLE).await;
        assert!(!running.is_finished(), "an idle subscription ended");
        tokio::time::resume();

        let room_by = tokio::time::Instant::now() + WAIT;
        store
            .publish("t", Pair { x: 9, y: 3 }.into(), room_by)
            .await
            .unwrap();
        wait_until_completed(&store, 1).await;
        stop.cancel();
        assert_eq!(running.await.unwrap(), DispatcherEnd::Stopped);
        assert_eq!(calls.lock().unwrap().len(), 1);
    }
}
