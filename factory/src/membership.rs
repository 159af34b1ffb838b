//! The factory's place at the broker: its topics and subscriptions, made at start, kept while
//! it works (a restarted broker forgets them; a broker that timed out a hung factory drops its
//! subscription), and given up when it stops.

use std::time::Duration;

use stubs::{BrokerError, ChannelRequest, Subscription};
use tarpc::client::RpcError;
use tokio_util::sync::CancellationToken;
use transport::{BrokerLink, LinkError};

use crate::FactoryError;

/// How often the factory asks the broker whether its subscriptions still stand. A dropped
/// subscription costs at most this long without work.
pub const SUBSCRIPTION_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The topics a factory needs and the subscriptions it holds.
pub struct Membership<'a> {
    /// The connection to the broker.
    pub broker: &'a BrokerLink,
    /// The topics to create (idempotent) before subscribing.
    pub channels: Vec<ChannelRequest>,
    /// The subscriptions to hold.
    pub subscriptions: Vec<Subscription>,
}

impl Membership<'_> {
    /// Creates the topics and subscribes.
    pub async fn join(&self) -> Result<(), FactoryError> {
        for channel in &self.channels {
            let action = || format!("create the topic {:?}", channel.topic);
            let report = ask(self.broker, action, channel, |client, channel| async move {
                client
                    .create_channel(tarpc::context::current(), channel)
                    .await
            })
            .await?;
            tracing::info!("{}", report.message);
        }
        for subscription in &self.subscriptions {
            let action = || format!("subscribe to {:?}", subscription.topic);
            let report = ask(
                self.broker,
                action,
                subscription,
                |client, subscription| async move {
                    client
                        .subscribe(tarpc::context::current(), subscription)
                        .await
                },
            )
            .await?;
            tracing::info!("{}", report.message);
        }
        Ok(())
    }

    /// Checks the subscriptions every [`SUBSCRIPTION_CHECK_INTERVAL`] until `stop`, and joins
    /// again when the broker has lost the topics or dropped a subscription. Returns an error
    /// only when the broker is gone for good.
    pub async fn keep(&self, stop: &CancellationToken) -> Result<(), FactoryError> {
        let mut checks = tokio::time::interval(SUBSCRIPTION_CHECK_INTERVAL);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = checks.tick() => {}
            }
            for subscription in &self.subscriptions {
                let held = self
                    .broker
                    .call(subscription, |client, subscription| async move {
                        client
                            .is_subscribed(tarpc::context::current(), subscription)
                            .await
                    })
                    .await;
                let rejoin = match held {
                    Ok(Ok(true)) => false,
                    Ok(Ok(false)) => {
                        tracing::warn!(
                            "the broker dropped the subscription to {:?}; subscribing again",
                            subscription.topic
                        );
                        true
                    }
                    Ok(Err(BrokerError::NoSuchTopic { topic })) => {
                        tracing::warn!(
                            "the broker does not know the topic {topic:?} (restarted?); joining again"
                        );
                        true
                    }
                    Ok(Err(error)) => {
                        tracing::warn!("cannot check a subscription: {error}");
                        false
                    }
                    Err(LinkError::Rpc(error)) => {
                        tracing::warn!(
                            "cannot check a subscription: {}",
                            transport::words::describe(&error)
                        );
                        false
                    }
                    Err(error @ LinkError::Gone { .. }) => {
                        return Err(FactoryError::BrokerLost(error));
                    }
                    // The factory is stopping; `stop` ends the loop.
                    Err(LinkError::Stopped) => return Ok(()),
                };
                if rejoin {
                    if let Err(error) = self.join().await {
                        tracing::warn!("joining again failed ({error}); trying at the next check");
                    }
                    break;
                }
            }
        }
    }

    /// Unsubscribes from everything, logging what fails: the factory is stopping anyway.
    pub async fn leave(&self) {
        for subscription in &self.subscriptions {
            let action = || format!("unsubscribe from {:?}", subscription.topic);
            let left = ask(
                self.broker,
                action,
                subscription,
                |client, subscription| async move {
                    client
                        .unsubscribe(tarpc::context::current(), subscription)
                        .await
                },
            )
            .await;
            if let Err(error) = left {
                tracing::warn!("{error}");
            }
        }
    }
}

/// Sends `request` with `send`, naming what was asked (`action`) in any error. Creating a
/// topic, subscribing and unsubscribing are idempotent, so a request that failed for now (the
/// broker's store, e.g. a NATS cluster electing its leaders, or no answer in time) is sent
/// again as [`BrokerLink::ask`] does before the error is given.
async fn ask<Q, T, F, Fut>(
    broker: &BrokerLink,
    action: impl Fn() -> String,
    request: &Q,
    send: F,
) -> Result<T, FactoryError>
where
    Q: Clone,
    F: Fn(stubs::BrokerClient, Q) -> Fut,
    Fut: std::future::Future<Output = Result<Result<T, BrokerError>, RpcError>>,
{
    match broker.ask(&action, request, send).await.answer {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(error)) => Err(FactoryError::Refused {
            action: action(),
            error,
        }),
        Err(error) => Err(FactoryError::Rpc {
            action: action(),
            error,
        }),
    }
}
