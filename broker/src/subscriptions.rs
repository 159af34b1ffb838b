//! The subscriptions in force: at most one per (topic, factory address, callback).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use stubs::Callback;
use tokio_util::sync::CancellationToken;

use crate::metrics::SubscriberMetrics;

/// What names a subscription. A factory that restarts on the same address and subscribes again
/// has the same key, so its new subscription replaces the old one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionKey {
    /// The topic.
    pub topic: Arc<str>,
    /// The factory's resolved address.
    pub factory: SocketAddr,
    /// The procedure called.
    pub callback: Callback,
}

#[derive(Debug)]
struct Active {
    /// Tells one subscription from the one that replaced it under the same key.
    generation: u64,
    stop: CancellationToken,
    metrics: Arc<SubscriberMetrics>,
}

/// The registry of subscriptions. The lock is held for a map operation only, never across an
/// `.await`.
#[derive(Debug, Default)]
pub struct Subscriptions {
    active: Mutex<HashMap<SubscriptionKey, Active>>,
    generations: AtomicU64,
}

impl Subscriptions {
    /// Registers a subscription that `stop` ends, stopping any it replaces. Returns its
    /// generation, for [`Subscriptions::remove_ended`], and whether it replaced one.
    pub fn insert(
        &self,
        key: SubscriptionKey,
        stop: CancellationToken,
        metrics: Arc<SubscriberMetrics>,
    ) -> (u64, bool) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let replaced = self.active.lock().insert(
            key,
            Active {
                generation,
                stop,
                metrics,
            },
        );
        if let Some(old) = &replaced {
            old.stop.cancel();
        }
        (generation, replaced.is_some())
    }

    /// Stops and removes the subscription under `key`; false if there is none.
    pub fn remove(&self, key: &SubscriptionKey) -> bool {
        match self.active.lock().remove(key) {
            Some(active) => {
                active.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Removes the subscription under `key` once its dispatcher has ended, unless a newer
    /// subscription has replaced it meanwhile.
    pub fn remove_ended(&self, key: &SubscriptionKey, generation: u64) {
        let mut active = self.active.lock();
        if active.get(key).is_some_and(|a| a.generation == generation) {
            active.remove(key);
        }
    }

    /// Whether a subscription is in force under `key`.
    pub fn contains(&self, key: &SubscriptionKey) -> bool {
        self.active.lock().contains_key(key)
    }

    /// The subscriptions in force, sorted by topic, factory and callback.
    pub fn keys(&self) -> Vec<SubscriptionKey> {
        self.list().into_iter().map(|(key, _)| key).collect()
    }

    /// The subscriptions in force with their counters, sorted by topic, factory and callback.
    pub fn list(&self) -> Vec<(SubscriptionKey, Arc<SubscriberMetrics>)> {
        let mut keys: Vec<_> = self
            .active
            .lock()
            .iter()
            .map(|(key, active)| (key.clone(), active.metrics.clone()))
            .collect();
        keys.sort_by(|(a, _), (b, _)| {
            (&a.topic, a.factory, a.callback.name()).cmp(&(&b.topic, b.factory, b.callback.name()))
        });
        keys
    }
}
