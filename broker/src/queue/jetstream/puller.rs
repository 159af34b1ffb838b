//! A topic's puller: one task that pulls jobs from the shared consumer for the takes waiting.

use std::collections::VecDeque;
use std::sync::Arc;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{FULL_RETRY, PULL_EXPIRES};

/// How many jobs a pull asks for beyond the takes waiting.
const LOOKAHEAD: usize = 32;
/// The most jobs one pull request asks for.
const MOST_IN_ONE_PULL: usize = 256;

/// Jobs held by this broker for its next takes, first first.
pub type PutBack = Arc<Mutex<VecDeque<Held>>>;

/// A job this broker holds for its next take: the message, the attempts it had when this
/// broker put it back (`None`: JetStream's count holds), and since when it is held.
pub struct Held {
    pub message: jetstream::Message,
    pub attempts: Option<u32>,
    pub since: Instant,
}

/// A take waiting for its job.
pub type Taker = oneshot::Sender<Held>;

/// Pulls jobs for the takes waiting, in one pull request for all of them and
/// [`LOOKAHEAD`] more (up to [`MOST_IN_ONE_PULL`]). A job with no take waiting for it (a take
/// dropped before its job came, or the lookahead) is held in this broker for the next take, at
/// most half its ack wait; it is never lost: unacknowledged, JetStream delivers it again. Jobs
/// held go to takes before any pull, and to a take that comes while a pull is under way.
pub async fn pull_for_takers(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    mut takers: mpsc::UnboundedReceiver<Taker>,
    put_back: PutBack,
) {
    let mut waiting = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match takers.recv().await {
                Some(taker) => waiting.push_back(taker),
                None => return,
            }
        }
        while let Ok(taker) = takers.try_recv() {
            waiting.push_back(taker);
        }
        serve_held(&mut waiting, &put_back);
        if waiting.is_empty() {
            continue;
        }
        // A few more than the takes waiting: a dispatcher fills its batch with the takes that
        // are ready at once, and these are.
        let pulled = consumer
            .batch()
            .max_messages((waiting.len() + LOOKAHEAD).min(MOST_IN_ONE_PULL))
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        match pulled {
            Ok(batch) => {
                if !hand_out(batch, &mut takers, &mut waiting, &put_back).await {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!("cannot pull from JetStream ({error}); trying again");
                tokio::time::sleep(PULL_EXPIRES).await;
            }
        }
    }
}

/// Hands the jobs of one pull to the takes waiting, and to those that come meanwhile: `false`
/// once the topic is gone.
async fn hand_out(
    mut batch: pull::Batch,
    takers: &mut mpsc::UnboundedReceiver<Taker>,
    waiting: &mut VecDeque<Taker>,
    put_back: &PutBack,
) -> bool {
    loop {
        tokio::select! {
            message = batch.next() => match message {
                Some(Ok(message)) => {
                    let held = Held { message, attempts: None, since: Instant::now() };
                    hand_over(held, waiting, put_back);
                }
                Some(Err(error)) => {
                    tracing::debug!("a pull request ended early: {error}");
                    tokio::time::sleep(FULL_RETRY).await;
                    return true;
                }
                None => return true,
            },
            taker = takers.recv() => match taker {
                Some(taker) => {
                    waiting.push_back(taker);
                    serve_held(waiting, put_back);
                }
                None => return false,
            },
        }
    }
}

/// Gives the jobs held here to the takes waiting, first first.
fn serve_held(waiting: &mut VecDeque<Taker>, put_back: &PutBack) {
    waiting.retain(|taker| !taker.is_closed());
    while !waiting.is_empty() {
        let Some(held) = put_back.lock().pop_front() else {
            return;
        };
        hand_over(held, waiting, put_back);
    }
}

/// Gives `held` to the first take still waiting, or holds it here for the next take.
fn hand_over(held: Held, waiting: &mut VecDeque<Taker>, put_back: &PutBack) {
    let mut held = held;
    while let Some(taker) = waiting.pop_front() {
        match taker.send(held) {
            Ok(()) => return,
            Err(returned) => held = returned,
        }
    }
    // No take waits (a pull asks for more, or a take was dropped): the job waits here for the
    // next take, behind those held before it.
    put_back.lock().push_back(held);
}
