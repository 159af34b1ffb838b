//! [`InFlight`]: the deliveries of one topic taken and not yet settled, each settled once.

use std::collections::HashMap;

use super::{Delivery, JobId, QueueError};

/// What a store keeps of each job in flight (the job itself, or the message to settle), by id.
#[derive(Debug)]
pub struct InFlight<T>(HashMap<JobId, T>);

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<T> InFlight<T> {
    /// Remembers a job just taken.
    pub fn insert(&mut self, id: JobId, held: T) {
        self.0.insert(id, held);
    }

    /// How many jobs are in flight.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Takes out what is kept of `delivery`: it is settled once.
    pub fn settle(&mut self, delivery: &Delivery) -> Result<T, QueueError> {
        self.0
            .remove(&delivery.id)
            .ok_or_else(|| not_in_flight(delivery))
    }

    /// Takes out what is kept of every delivery, in their order, all of `topic` or none.
    pub fn settle_all<'d>(
        &mut self,
        topic: &str,
        deliveries: &'d [Delivery],
    ) -> Result<Vec<(&'d Delivery, T)>, QueueError> {
        if let Some(missing) = deliveries
            .iter()
            .find(|delivery| *delivery.topic != *topic || !self.0.contains_key(&delivery.id))
        {
            return Err(not_in_flight(missing));
        }
        Ok(deliveries
            .iter()
            .filter_map(|delivery| Some((delivery, self.0.remove(&delivery.id)?)))
            .collect())
    }
}

fn not_in_flight(delivery: &Delivery) -> QueueError {
    QueueError::NotInFlight {
        topic: delivery.topic.to_string(),
        id: delivery.id,
    }
}
