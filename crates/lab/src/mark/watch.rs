//! The harness's broker: a real broker in this process whose every subscribe, publish and
//! outcome is written down, because a factory is judged by what the broker sees.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use broker::queue::JobId;
use broker::{Outcome, Request, Settings};
use parking_lot::{Mutex, MutexGuard};
use stubs::{ChannelRequest, Job, Subscription};

use super::TOPIC_BUFFER;
use crate::RunningBroker;
use transport::{ClientTls, TlsFiles};

/// The most records of each kind kept: a factory that floods the broker is seen flooding,
/// without growing the harness's memory for ever.
const MAX_RECORDS: usize = 100_000;

/// A subscribe the broker answered.
#[derive(Clone, Debug)]
pub struct SubscribeSeen {
    /// What the factory asked for.
    pub subscription: Subscription,
    /// The broker's refusal, if it refused.
    pub refusal: Option<String>,
}

/// A job the broker stored.
#[derive(Clone, Debug)]
pub struct PublishSeen {
    /// Its topic.
    pub topic: String,
    /// The job.
    pub job: Job,
    /// Its id.
    pub id: JobId,
}

/// What the broker has seen, in order.
#[derive(Debug, Default)]
pub struct Journal {
    /// Every subscribe, accepted or refused.
    pub subscribes: Vec<SubscribeSeen>,
    /// Every job stored.
    pub publishes: Vec<PublishSeen>,
    /// Every outcome of a call.
    pub outcomes: Vec<Outcome>,
    /// Records left out past [`MAX_RECORDS`].
    pub left_out: u64,
}

impl Journal {
    fn see_outcome(&mut self, outcome: &Outcome) {
        Self::record(&mut self.outcomes, &mut self.left_out, outcome.clone());
    }

    fn see_request(&mut self, request: Request<'_>) {
        match request {
            Request::Subscribe {
                subscription,
                answer,
            } => {
                let seen = SubscribeSeen {
                    subscription: subscription.clone(),
                    refusal: answer.err().map(ToString::to_string),
                };
                Self::record(&mut self.subscribes, &mut self.left_out, seen);
            }
            Request::Publish {
                topic,
                jobs,
                stored,
                ..
            } => {
                for (job, id) in jobs.iter().zip(stored) {
                    let seen = PublishSeen {
                        topic: topic.to_owned(),
                        job: *job,
                        id: *id,
                    };
                    Self::record(&mut self.publishes, &mut self.left_out, seen);
                }
            }
        }
    }

    fn record<T>(records: &mut Vec<T>, left_out: &mut u64, record: T) {
        if records.len() < MAX_RECORDS {
            records.push(record);
        } else {
            *left_out += 1;
        }
    }
}

/// The harness's broker on a free loopback port, with its journal.
pub struct WatchedBroker {
    running: RunningBroker,
    journal: Arc<Mutex<Journal>>,
    /// The harness's TLS as a client of the broker, when it serves TLS.
    client_tls: Option<ClientTls>,
}

impl WatchedBroker {
    /// Starts a broker whose calls to a factory time out after `call_timeout`, with the lab's
    /// two topics created; with `tls_dir`, serving and dialling in TLS with its files.
    pub async fn start(call_timeout: Duration, tls_dir: Option<&Path>) -> std::io::Result<Self> {
        let (server_tls, client_tls) = match tls_dir.map(TlsFiles::in_dir) {
            Some(files) => (
                files.server().map_err(std::io::Error::other)?,
                files.client().map_err(std::io::Error::other)?,
            ),
            None => (None, None),
        };
        let journal = Arc::new(Mutex::new(Journal::default()));
        let outcomes = journal.clone();
        let requests = journal.clone();
        let mut settings = Settings {
            call_timeout,
            factory_tls: client_tls.clone(),
            ..Settings::default()
        };
        settings.admission.tls = server_tls;
        let running = RunningBroker::start_watched(
            0,
            settings,
            Arc::new(move |outcome: &Outcome| outcomes.lock().see_outcome(outcome)),
            Some(Arc::new(move |request: Request<'_>| {
                requests.lock().see_request(request)
            })),
        )
        .await?;
        for topic in [stubs::MULTIPLY_TOPIC, stubs::DIVIDE_TOPIC] {
            let request = ChannelRequest {
                topic: topic.to_owned(),
                buffer: TOPIC_BUFFER,
            };
            running
                .broker
                .create_channel(request)
                .await
                .map_err(std::io::Error::other)?;
        }
        Ok(Self {
            running,
            journal,
            client_tls,
        })
    }

    /// How the harness dials the broker: in TLS when it serves TLS.
    pub fn client_tls(&self) -> Option<ClientTls> {
        self.client_tls.clone()
    }

    /// Where the broker listens.
    pub fn address(&self) -> SocketAddr {
        self.running.address
    }

    /// What the broker has seen so far.
    pub fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock()
    }

    /// Stops the broker.
    pub async fn stop(self) {
        self.running.stop().await;
    }
}
