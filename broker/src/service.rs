//! The tarpc adapter: the `stubs::Broker` service over a [`BrokerState`]. No queue logic lives
//! here.

use std::sync::Arc;

use stubs::{
    BrokerError, BrokerStats, ChannelRequest, DeadLetters, PublishBatch, PublishRequest, Published,
    PublishedBatch, StatusReport, Subscription,
};
use tarpc::context::Context;

use crate::requests::BrokerState;

/// The broker's RPC service, one clone per request.
#[derive(Clone)]
pub struct BrokerService {
    broker: Arc<BrokerState>,
}

impl BrokerService {
    /// Serves `broker`.
    pub fn new(broker: Arc<BrokerState>) -> Self {
        Self { broker }
    }
}

impl stubs::Broker for BrokerService {
    async fn create_channel(
        self,
        _: Context,
        request: ChannelRequest,
    ) -> Result<StatusReport, BrokerError> {
        self.broker.create_channel(request).await
    }

    async fn publish(
        self,
        context: Context,
        request: PublishRequest,
    ) -> Result<Published, BrokerError> {
        self.broker.publish(request, context.deadline).await
    }

    async fn publish_batch(
        self,
        context: Context,
        batch: PublishBatch,
    ) -> Result<PublishedBatch, BrokerError> {
        self.broker.publish_batch(batch, context.deadline).await
    }

    async fn subscribe(
        self,
        _: Context,
        subscription: Subscription,
    ) -> Result<StatusReport, BrokerError> {
        self.broker.subscribe(subscription).await
    }

    async fn unsubscribe(
        self,
        _: Context,
        subscription: Subscription,
    ) -> Result<StatusReport, BrokerError> {
        self.broker.unsubscribe(subscription).await
    }

    async fn stats(self, _: Context) -> BrokerStats {
        self.broker.stats().await
    }

    async fn is_subscribed(
        self,
        _: Context,
        subscription: Subscription,
    ) -> Result<bool, BrokerError> {
        self.broker.is_subscribed(subscription).await
    }

    async fn dead_letters(self, _: Context, topic: String) -> Result<DeadLetters, BrokerError> {
        self.broker.dead_letters(&topic).await
    }
}
