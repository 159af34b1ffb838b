//! One call of a dispatcher, and how each job of it is settled: completed, dead-lettered with
//! its job error, or put back (given up on once delivered as often as allowed).

use std::sync::atomic::Ordering;
use std::time::Instant;

use stubs::{Job, JobError, JobReport};

use super::Shared;
use crate::outcome::Outcome;
use crate::queue::{Delivery, JobStore, QueueError};

impl Shared {
    /// Calls the factory once with `deliveries` (in one `multiply_batch` or `divide_batch` call
    /// when there are several) and settles each.
    pub(super) async fn deliver(&self, deliveries: Vec<Delivery>) {
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
        let reply = tokio::time::timeout(
            this.call_timeout,
            this.client.call(&this.callback, context, jobs),
        )
        .await;
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
            Err(reason) => self.fail(deliveries, reason).await,
        }
    }

    /// Ends the subscription after a failed call: its jobs go back to the topic, but those
    /// delivered as often as allowed are dead-lettered.
    async fn fail(&self, deliveries: Vec<Delivery>, reason: String) {
        let this = &self.dispatcher;
        tracing::warn!(
            "{} at {} failed on {} of {:?}: {reason}; the subscription ends, and the \
             jobs go back to the topic unless delivered as often as allowed",
            this.callback,
            this.factory,
            jobs_text(&deliveries),
            this.topic
        );
        self.failure.lock().get_or_insert_with(|| reason.clone());
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
}

/// The jobs of one call, as a log line names them: `job 7`, or `jobs 7 and 3 more`.
fn jobs_text(deliveries: &[Delivery]) -> String {
    match deliveries {
        [one] => format!("job {}", one.id),
        [first, rest @ ..] => format!("jobs {} and {} more", first.id, rest.len()),
        [] => "no job".to_owned(),
    }
}
