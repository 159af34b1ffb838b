//! [`BrokerState`]: the broker's state, and its requests (topics, publishes, subscriptions, and
//! what it reports of them) checked and carried out over its [`Store`]. The tarpc service in
//! `service.rs` and the Go front door only forward to it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stubs::{
    BrokerError, BrokerStats, Callback, ChannelRequest, DeadLetters, Job, Protocol, PublishBatch,
    PublishRequest, Published, PublishedBatch, StatusReport, SubscriberReport, Subscription,
    TopicReport, MAX_PUBLISH_BATCH,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use transport::ConnectError;

use crate::dispatcher::{accepts_batches, Dispatcher, DispatcherEnd, FactoryLink, TarpcFactory};
use crate::go::GoFactory;
use crate::metrics::{Metrics, SubscriberMetrics};
use crate::outcome::Observer;
use crate::queue::{
    validate_buffer, validate_prefetch, validate_topic_name, JobId, JobStore, QueueError,
    TopicCounts, TopicCreation, ValidationError,
};
use crate::settings::Settings;
use crate::store::Store;
use crate::subscriptions::{SubscriptionKey, Subscriptions};

/// Time kept back from a publisher's deadline, so that the broker's `TopicFull` reply reaches the
/// publisher before the publisher gives up on its own.
pub const PUBLISH_REPLY_MARGIN: Duration = Duration::from_millis(50);

/// The longest callback name a Go factory may give: far longer than any `Type.Method`.
pub const MAX_CALLBACK_LENGTH: usize = 255;

/// A request that changes what the broker does, with the broker's answer, as a [`Watcher`]
/// hears of it.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// A subscribe, accepted or refused.
    Subscribe {
        /// What was asked.
        subscription: &'a Subscription,
        /// The answer.
        answer: Result<&'a StatusReport, &'a BrokerError>,
    },
    /// A publish of one job or of a batch: the ids of the jobs stored, from the first, and why
    /// the others were not.
    Publish {
        /// The topic.
        topic: &'a str,
        /// The jobs asked for.
        jobs: &'a [Job],
        /// The ids of the jobs stored, in order from the first.
        stored: &'a [JobId],
        /// Why the jobs after those were not stored.
        error: Option<&'a BrokerError>,
    },
}

/// Hears of every subscribe and publish with its answer, whichever front door it came through:
/// what `lab mark` judges a factory by. Called on the request's task, so it must be quick.
pub type Watcher = Arc<dyn Fn(Request<'_>) + Send + Sync>;

/// The broker's state and its requests.
pub struct BrokerState {
    store: Arc<Store>,
    subscriptions: Subscriptions,
    settings: Settings,
    observer: Observer,
    watcher: Option<Watcher>,
    shutdown: CancellationToken,
    dispatchers: TaskTracker,
    metrics: Metrics,
    started: Instant,
}

impl BrokerState {
    /// A broker over `store` whose subscribes and publishes `watcher`, if any, hears of.
    /// Cancelling `shutdown` stops every dispatcher.
    pub fn new(
        store: Store,
        settings: Settings,
        observer: Observer,
        watcher: Option<Watcher>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            store: Arc::new(store),
            subscriptions: Subscriptions::default(),
            settings,
            observer,
            watcher,
            shutdown,
            dispatchers: TaskTracker::new(),
            metrics: Metrics::default(),
            started: Instant::now(),
        })
    }

    /// Creates a topic, or reports the capacity an existing one keeps.
    pub async fn create_channel(
        &self,
        request: ChannelRequest,
    ) -> Result<StatusReport, BrokerError> {
        validate_topic_name(&request.topic)?;
        validate_buffer(request.buffer)?;
        let ChannelRequest { topic, buffer } = request;
        if !self.store.has_topic(&topic).await
            && self.store.topic_names().await.len() >= self.settings.max_topics
        {
            return Err(BrokerError::TooManyTopics {
                limit: self.settings.max_topics as u32,
            });
        }
        let message = match self.store.create_topic(&topic, buffer as usize).await? {
            TopicCreation::Created => {
                let message = format!("created topic {topic:?} with buffer {buffer}");
                tracing::info!("{message}");
                message
            }
            TopicCreation::Existing { capacity } if capacity == buffer as usize => {
                format!("topic {topic:?} exists with buffer {capacity}")
            }
            TopicCreation::Existing { capacity } => format!(
                "topic {topic:?} exists with buffer {capacity}; it keeps that buffer, not {buffer}"
            ),
        };
        Ok(StatusReport { message })
    }

    /// Appends a job, waiting for room until shortly before `deadline`. A job that found no
    /// room in time is not enqueued.
    pub async fn publish(
        &self,
        request: PublishRequest,
        deadline: Instant,
    ) -> Result<Published, BrokerError> {
        validate_topic_name(&request.topic)?;
        let stored = self
            .store
            .publish(&request.topic, request.job, reply_by(deadline))
            .await
            .map_err(BrokerError::from);
        if let Some(watcher) = &self.watcher {
            let (ids, error) = match &stored {
                Ok(job_id) => (std::slice::from_ref(job_id), None),
                Err(error) => (&[][..], Some(error)),
            };
            watcher(Request::Publish {
                topic: &request.topic,
                jobs: std::slice::from_ref(&request.job),
                stored: ids,
                error,
            });
        }
        let job_id = stored?;
        tracing::debug!(
            "published {} to {:?} (job {job_id})",
            request.job,
            request.topic
        );
        Ok(Published { job_id })
    }

    /// Appends the jobs of `batch` in order, each as [`BrokerState::publish`] would, all by
    /// `deadline`: a batch that meets a full topic waits for room job by job, and the jobs still
    /// waiting at the deadline are left out, with `TopicFull`.
    pub async fn publish_batch(
        &self,
        batch: PublishBatch,
        deadline: Instant,
    ) -> Result<PublishedBatch, BrokerError> {
        validate_topic_name(&batch.topic)?;
        if batch.jobs.len() > MAX_PUBLISH_BATCH {
            return Err(BrokerError::BatchTooLarge {
                jobs: batch.jobs.len().min(u32::MAX as usize) as u32,
                max: MAX_PUBLISH_BATCH as u32,
            });
        }
        // Kept for the watcher alone: the store takes the jobs.
        let watched_jobs = self.watcher.as_ref().map(|_| batch.jobs.clone());
        let (job_ids, error) = self
            .store
            .publish_many(&batch.topic, batch.jobs, reply_by(deadline))
            .await;
        let error = error.map(BrokerError::from);
        if let (Some(watcher), Some(jobs)) = (&self.watcher, &watched_jobs) {
            watcher(Request::Publish {
                topic: &batch.topic,
                jobs,
                stored: &job_ids,
                error: error.as_ref(),
            });
        }
        match error {
            // Nothing stored: the same answer a single publish would give.
            Some(error) if job_ids.is_empty() => Err(error),
            error => Ok(PublishedBatch { job_ids, error }),
        }
    }

    /// Checks a subscription, connects to its factory and starts its dispatcher, replacing
    /// the factory's earlier subscription under the same topic and callback.
    pub async fn subscribe(
        self: &Arc<Self>,
        subscription: Subscription,
    ) -> Result<StatusReport, BrokerError> {
        self.watched_subscribe(subscription, Protocol::Tarpc).await
    }

    /// [`BrokerState::subscribe`] for a factory that Go's net/rpc reaches: its callback is any
    /// method it registered, called by name, one job a call.
    pub async fn subscribe_go(
        self: &Arc<Self>,
        subscription: Subscription,
    ) -> Result<StatusReport, BrokerError> {
        self.watched_subscribe(subscription, Protocol::GoNetRpc)
            .await
    }

    async fn watched_subscribe(
        self: &Arc<Self>,
        subscription: Subscription,
        protocol: Protocol,
    ) -> Result<StatusReport, BrokerError> {
        let Some(watcher) = &self.watcher else {
            return self.start_subscription(subscription, protocol).await;
        };
        let answer = self
            .start_subscription(subscription.clone(), protocol)
            .await;
        watcher(Request::Subscribe {
            subscription: &subscription,
            answer: answer.as_ref(),
        });
        answer
    }

    async fn start_subscription(
        self: &Arc<Self>,
        subscription: Subscription,
        protocol: Protocol,
    ) -> Result<StatusReport, BrokerError> {
        let (key, prefetch) = self.check_subscription(&subscription, protocol).await?;
        if self.shutdown.is_cancelled() {
            return Err(BrokerError::ShuttingDown);
        }
        let address = subscription.factory_address;
        let (client, batches) = self
            .connect_factory(&key, &address, prefetch, protocol)
            .await?;
        let replaced = self.start_dispatcher(key, client, prefetch, batches, protocol);
        let verb = if replaced {
            "resubscribed"
        } else {
            "subscribed"
        };
        tracing::info!(
            "{verb} {address} to {:?} with {} ({}, prefetch {prefetch})",
            subscription.topic,
            subscription.callback,
            protocol.name()
        );
        Ok(StatusReport {
            message: format!(
                "{verb} {address} to {:?} with {} (prefetch {prefetch})",
                subscription.topic, subscription.callback
            ),
        })
    }

    /// Connects to the factory of a subscription: the link, and whether it takes batched
    /// calls.
    async fn connect_factory(
        &self,
        key: &SubscriptionKey,
        address: &str,
        prefetch: u32,
        protocol: Protocol,
    ) -> Result<(FactoryLink, bool), BrokerError> {
        let unreachable = |reason: String| BrokerError::Unreachable {
            address: address.to_owned(),
            reason,
        };
        let connect = || async {
            let stream = transport::dial(
                &key.factory.to_string(),
                self.settings.connect_timeout,
                &self.settings.admission.token,
                self.settings.factory_tls.as_ref(),
            )
            .await
            .map_err(|error| unreachable(error.to_string()))?;
            Ok::<_, BrokerError>(TarpcFactory::new(stream))
        };
        match protocol {
            Protocol::GoNetRpc => {
                let factory = GoFactory::connect(key.factory, self.settings.connect_timeout)
                    .await
                    .map_err(unreachable)?;
                Ok((FactoryLink::Go(factory), false))
            }
            Protocol::Tarpc => {
                let mut client = connect().await?;
                let batches = prefetch > 1
                    && accepts_batches(&client, &key.callback, self.settings.connect_timeout).await;
                if prefetch > 1 && !batches {
                    tracing::info!(
                        "{} takes no batched calls for {}; calling it one job at a time",
                        key.factory,
                        key.callback
                    );
                    // It may have closed the connection on the question.
                    client = connect().await?;
                }
                Ok((FactoryLink::Tarpc(client), batches))
            }
        }
    }

    /// Registers the subscription `key` and starts its dispatcher over `client`; whether it
    /// replaced an earlier one.
    fn start_dispatcher(
        self: &Arc<Self>,
        key: SubscriptionKey,
        client: FactoryLink,
        prefetch: u32,
        batches: bool,
        protocol: Protocol,
    ) -> bool {
        let stop = self.shutdown.child_token();
        let subscriber_metrics = Arc::new(SubscriberMetrics::new(prefetch, protocol));
        let (generation, replaced) =
            self.subscriptions
                .insert(key.clone(), stop.clone(), subscriber_metrics.clone());
        let dispatcher = Dispatcher {
            store: self.store.clone(),
            topic: key.topic.clone(),
            callback: key.callback.clone(),
            factory: Arc::from(key.factory.to_string()),
            client,
            prefetch,
            batches,
            call_timeout: self.settings.call_timeout,
            max_deliveries: self.settings.max_deliveries,
            observer: self.observer.clone(),
            stop,
            topic_metrics: self.metrics.topic(&key.topic),
            subscriber_metrics,
        };
        let state = self.clone();
        self.dispatchers.spawn(async move {
            let end = dispatcher.run().await;
            state.subscriptions.remove_ended(&key, generation);
            log_end(&key, end);
        });
        replaced
    }

    /// Stops dispatching to a subscription; its calls in flight finish.
    pub async fn unsubscribe(
        &self,
        subscription: Subscription,
    ) -> Result<StatusReport, BrokerError> {
        let (key, _) = self
            .check_subscription(&subscription, Protocol::Tarpc)
            .await?;
        if !self.subscriptions.remove(&key) {
            return Err(BrokerError::NoSuchSubscription {
                topic: subscription.topic,
                factory_address: subscription.factory_address,
                callback: subscription.callback,
            });
        }
        let message = format!(
            "unsubscribed {} from {:?} with {}",
            subscription.factory_address, subscription.topic, subscription.callback
        );
        tracing::info!("{message}");
        Ok(StatusReport { message })
    }

    /// The counts of a topic, as its store keeps them.
    pub async fn topic_counts(&self, topic: &str) -> Result<TopicCounts, BrokerError> {
        Ok(self.store.counts(topic).await?)
    }

    /// What the broker is doing: every topic and subscription with its figures.
    pub async fn stats(&self) -> BrokerStats {
        let subscriptions = self.subscriptions.list();
        let mut topics = Vec::new();
        for name in self.store.topic_names().await {
            // A topic cannot disappear, so this only skips a store that fails to answer.
            let Ok(counts) = self.store.counts(&name).await else {
                continue;
            };
            let metrics = self.metrics.existing(&name);
            topics.push(TopicReport {
                capacity: counts.capacity as u64,
                ready: counts.ready as u64,
                in_flight: counts.in_flight as u64,
                published: counts.published,
                completed: counts.completed,
                failed: counts.failed,
                requeued: counts.requeued,
                undeliverable: counts.undeliverable,
                dead: counts.dead as u64,
                subscribers: subscriptions
                    .iter()
                    .filter(|(key, _)| *key.topic == *name)
                    .count() as u64,
                rate_per_s: metrics.as_ref().map_or(0.0, |m| m.rate_per_s()),
                latency_us: metrics.as_ref().map(|m| m.latency()).unwrap_or_default(),
                jetstream: counts.jetstream,
                name,
            });
        }
        let subscribers = subscriptions
            .into_iter()
            .map(|(key, counters)| SubscriberReport {
                topic: key.topic.to_string(),
                address: key.factory.to_string(),
                callback: key.callback.name().to_owned(),
                protocol: counters.protocol,
                prefetch: counters.prefetch,
                in_flight: counters.in_flight.load(Ordering::Relaxed),
                completed: counters.completed.load(Ordering::Relaxed),
                failed: counters.failed.load(Ordering::Relaxed),
                connected_since_unix_s: counters.connected_since_unix_s(),
            })
            .collect();
        BrokerStats {
            topics,
            subscribers,
            uptime_s: self.started.elapsed().as_secs(),
        }
    }

    /// The latency histograms of every topic, for `/metrics`.
    pub fn latency_histograms(&self) -> crate::metrics::LatencyHistograms {
        self.metrics.prometheus_latency()
    }

    /// Whether the subscription is in force.
    pub async fn is_subscribed(&self, subscription: Subscription) -> Result<bool, BrokerError> {
        let (key, _) = self
            .check_subscription(&subscription, Protocol::Tarpc)
            .await?;
        Ok(self.subscriptions.contains(&key))
    }

    /// The jobs of a topic that failed with a job error.
    pub async fn dead_letters(&self, topic: &str) -> Result<DeadLetters, BrokerError> {
        validate_topic_name(topic)?;
        Ok(self.store.dead_letters(topic).await?)
    }

    /// The broker's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The subscriptions in force.
    pub fn subscriptions(&self) -> Vec<SubscriptionKey> {
        self.subscriptions.keys()
    }

    /// Waits until every dispatcher has ended, once shutdown has been signalled.
    pub async fn dispatchers_finished(&self) {
        self.dispatchers.close();
        self.dispatchers.wait().await;
    }

    async fn check_subscription(
        &self,
        subscription: &Subscription,
        protocol: Protocol,
    ) -> Result<(SubscriptionKey, u32), BrokerError> {
        validate_topic_name(&subscription.topic)?;
        if !self.store.has_topic(&subscription.topic).await {
            return Err(BrokerError::NoSuchTopic {
                topic: subscription.topic.clone(),
            });
        }
        let unknown = || BrokerError::UnknownCallback {
            callback: subscription.callback.clone(),
        };
        let callback = match protocol {
            Protocol::Tarpc => Callback::from_name(&subscription.callback).ok_or_else(unknown)?,
            // net/rpc names a method `Type.Method`; the factory says whether it has it.
            Protocol::GoNetRpc => {
                let name = &subscription.callback;
                let well_formed = name.len() <= MAX_CALLBACK_LENGTH
                    && name
                        .split_once('.')
                        .is_some_and(|(service, method)| !service.is_empty() && !method.is_empty());
                if !well_formed {
                    return Err(unknown());
                }
                Callback::from_go_name(name)
            }
        };
        validate_prefetch(subscription.prefetch)?;
        let factory = transport::resolve(&subscription.factory_address)
            .await
            .map_err(|error| BrokerError::InvalidAddress {
                address: subscription.factory_address.clone(),
                reason: match error {
                    ConnectError::Resolve { source, .. } => source.to_string(),
                    other => other.to_string(),
                },
            })?;
        Ok((
            SubscriptionKey {
                topic: Arc::from(subscription.topic.as_str()),
                factory,
                callback,
            },
            subscription.prefetch,
        ))
    }
}

/// Says why a subscription's dispatcher ended.
fn log_end(key: &SubscriptionKey, end: DispatcherEnd) {
    match end {
        // Unsubscribing, resubscribing and stopping the broker each said so already.
        DispatcherEnd::Stopped => tracing::debug!(
            "the subscription of {} to {:?} with {} ended",
            key.factory,
            key.topic,
            key.callback
        ),
        DispatcherEnd::FactoryFailed(reason) => tracing::warn!(
            "dropped the subscription of {} to {:?} with {}: {reason}",
            key.factory,
            key.topic,
            key.callback
        ),
        DispatcherEnd::Store(error) => tracing::error!(
            "dropped the subscription of {} to {:?}: the store failed: {error}",
            key.factory,
            key.topic
        ),
    }
}

/// When the store must answer a publisher whose deadline is `deadline`: early enough for the
/// answer to reach it.
fn reply_by(deadline: Instant) -> tokio::time::Instant {
    deadline
        .checked_sub(PUBLISH_REPLY_MARGIN)
        .unwrap_or(deadline)
        .into()
}

impl From<QueueError> for BrokerError {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::NoSuchTopic(topic) => BrokerError::NoSuchTopic { topic },
            QueueError::Storage(reason) => BrokerError::StorageFailed { reason },
            QueueError::Full { topic, capacity } => BrokerError::TopicFull {
                topic,
                capacity: capacity.min(u32::MAX as usize) as u32,
            },
            // Requests never settle deliveries; only dispatchers do, and they log this.
            QueueError::NotInFlight { topic, .. } => BrokerError::NoSuchTopic { topic },
        }
    }
}

impl From<ValidationError> for BrokerError {
    fn from(error: ValidationError) -> Self {
        match error {
            ValidationError::Topic { topic, reason } => BrokerError::InvalidTopic { topic, reason },
            ValidationError::Buffer { buffer, min, max } => {
                BrokerError::InvalidBuffer { buffer, min, max }
            }
            ValidationError::Prefetch { prefetch, min, max } => {
                BrokerError::InvalidPrefetch { prefetch, min, max }
            }
        }
    }
}
