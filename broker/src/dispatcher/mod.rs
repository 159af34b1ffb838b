//! A dispatcher: the loop of one subscription. It takes jobs from its topic, calls its factory
//! back with each (up to `prefetch` calls at once, each with a deadline) and settles every job
//! it took: completed, failed, or put back when the factory cannot be reached (dead-lettered
//! instead once the job has been delivered as often as the broker allows). A subscription whose
//! factory's connection closes ends too, even with no call in flight to find out.
//!
//! - This file: the loop that takes jobs and fills calls.
//! - [`link`]: how a factory is reached and called.
//! - `settle.rs`: one call, and how each job of it is settled.

mod link;
mod settle;
#[cfg(test)]
mod tests;

pub use link::{accepts_batches, FactoryLink, TarpcFactory};

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use stubs::Callback;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{SubscriberMetrics, TopicMetrics};
use crate::outcome::Observer;
use crate::queue::{Delivery, JobStore, QueueError};
use crate::store::Store;

/// One subscription's dispatch loop and what it needs.
pub struct Dispatcher {
    /// Where the jobs come from.
    pub store: Arc<Store>,
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

/// Why a subscription ended when its factory's connection closed with no call on it to fail.
const CONNECTION_CLOSED: &str = "the connection to the factory closed";

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

/// What the calls of one dispatcher share.
struct Shared {
    dispatcher: Dispatcher,
    /// The first call failure, which ends the subscription. Locked once per failed call only.
    failure: Mutex<Option<String>>,
}

/// A job taken with the slot it holds, the slot released when its call ends.
type Taken = (OwnedSemaphorePermit, Delivery);

impl Dispatcher {
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
        let mut set_aside: Option<Taken> = None;
        let end = loop {
            let (mut slot, delivery) = match set_aside.take() {
                Some(taken) => taken,
                None => match this.next(&slots, closed.as_mut()).await {
                    Ok(taken) => taken,
                    Err(end) => break end,
                },
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
                set_aside = this.fill(&slots, &mut slot, &mut deliveries);
            }
            let shared = shared.clone();
            calls.spawn(async move {
                shared.deliver(deliveries).await;
                drop(slot);
            });
        };
        calls.close();
        calls.wait().await;
        let failure = shared.failure.lock().take();
        match (end, failure) {
            // A failed call says more than the closed connection seen beside it.
            (DispatcherEnd::Stopped | DispatcherEnd::FactoryFailed(_), Some(reason)) => {
                DispatcherEnd::FactoryFailed(reason)
            }
            (end, _) => end,
        }
    }

    /// Waits for a free slot, then for a job; how the loop ends instead, if it must.
    async fn next(
        &self,
        slots: &Arc<Semaphore>,
        closed: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<Taken, DispatcherEnd> {
        // Biased towards `stop`, so that no job is taken once stopping has begun. Both
        // `acquire_owned` and `take` are cancel-safe: dropped, they hold nothing.
        let slot = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Err(DispatcherEnd::Stopped),
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return Err(DispatcherEnd::Stopped),
            },
        };
        let delivery = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Err(DispatcherEnd::Stopped),
            taken = self.store.take(&self.topic) => taken.map_err(DispatcherEnd::Store)?,
            // The calls in flight, if any, fail by themselves; `take`, dropped, has taken
            // nothing.
            () = closed => {
                return Err(DispatcherEnd::FactoryFailed(CONNECTION_CLOSED.to_owned()))
            }
        };
        Ok((slot, delivery))
    }

    /// Adds the jobs that are ready now, up to the free slots, to the call of `deliveries`:
    /// under load one call carries many jobs, and a call costs both ends far more than a job.
    /// A job delivered before is not added but returned, to go in a call of its own.
    fn fill(
        &self,
        slots: &Arc<Semaphore>,
        slot: &mut OwnedSemaphorePermit,
        deliveries: &mut Vec<Delivery>,
    ) -> Option<Taken> {
        // `take` polled once is cancel-safe: not ready, it takes nothing.
        while self.batches && !self.stop.is_cancelled() {
            let Ok(next_slot) = slots.clone().try_acquire_owned() else {
                break;
            };
            match self.store.take(&self.topic).now_or_never() {
                Some(Ok(delivery)) if delivery.attempt > 1 => return Some((next_slot, delivery)),
                Some(Ok(delivery)) => {
                    deliveries.push(delivery);
                    slot.merge(next_slot);
                }
                _ => break,
            }
        }
        None
    }
}
