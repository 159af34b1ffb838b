//! One part's marking session: a broker of the harness's own, the factory instances started
//! against it, and the waits every check is made of, each with its deadline.

use std::collections::HashSet;
use std::time::Duration;

use broker::queue::JobId;
use broker::Outcome;
use stubs::{Job, Subscription};

use super::process::{Exit, FactoryProcess, Stopped};
use super::watch::{Journal, SubscribeSeen, WatchedBroker};
use super::MarkArgs;

/// How often a wait looks at the journal again.
const POLL: Duration = Duration::from_millis(10);
/// Where the harness looks for a port when the system does not say where its ephemeral ports
/// begin: Linux's default.
const EPHEMERAL_LOW: u16 = 32_768;
/// The lowest port the harness gives a factory: clear of the well-known and of most services.
const LOWEST_PORT: u16 = 10_000;
/// Tries at a random port before the harness takes one from the system.
const PORT_TRIES: usize = 100;

/// A free loopback port for a factory instance, below the system's ephemeral range: a port of
/// that range may be taken by any program's outgoing connection between the harness's choosing
/// it and the factory's binding it, and none takes these unasked.
pub fn free_port() -> Result<u16, String> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(EPHEMERAL_LOW);
    let bind = |port: u16| {
        std::net::TcpListener::bind(("127.0.0.1", port))
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
    };
    if low > LOWEST_PORT {
        for _ in 0..PORT_TRIES {
            if let Ok(port) = bind(rand::random_range(LOWEST_PORT..low)) {
                return Ok(port);
            }
        }
    }
    bind(0).map_err(|error| format!("the harness found no free port: {error}"))
}

/// How a wait ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waited {
    /// What was waited for happened.
    Done,
    /// A factory instance exited first: how, and its last lines.
    Exited(Exit),
    /// The deadline passed first.
    TimedOut(Duration),
}

/// What became of one job the harness published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The factory returned a value.
    Value {
        /// The value.
        result: i64,
        /// The factory's address.
        factory: String,
    },
    /// The factory returned an error.
    Error(String),
    /// The call failed in transport (the job went back to its topic), for this reason.
    CallFailed(String),
    /// Nothing yet.
    Nothing,
}

impl Answer {
    /// Whether the job is settled: answered with a value or an error.
    pub fn is_final(&self) -> bool {
        matches!(self, Answer::Value { .. } | Answer::Error(_))
    }
}

/// One part's broker and factory instances.
pub struct Session<'a> {
    args: &'a MarkArgs,
    broker: WatchedBroker,
    instances: Vec<FactoryProcess>,
    /// The jobs the harness published, by topic and id, told apart from the factory's own.
    own: HashSet<(String, JobId)>,
}

impl<'a> Session<'a> {
    /// A session with a new broker and no factory yet.
    pub async fn start(args: &'a MarkArgs) -> std::io::Result<Self> {
        Ok(Self {
            args,
            broker: WatchedBroker::start(args.call_timeout.into(), args.tls_dir.as_deref()).await?,
            instances: Vec::new(),
            own: HashSet::new(),
        })
    }

    /// The deadline of a check.
    pub fn check_timeout(&self) -> Duration {
        self.args.check_timeout.into()
    }

    /// How long a stopped factory has before it is killed.
    pub fn stop_timeout(&self) -> Duration {
        self.args.stop_timeout.into()
    }

    /// What the broker has seen so far.
    pub fn journal(&self) -> parking_lot::MutexGuard<'_, Journal> {
        self.broker.journal()
    }

    /// Starts an instance of the factory on `port`, and waits for its subscription to `topic`
    /// with `callback`: the subscription, or why none came.
    pub async fn launch(
        &mut self,
        port: u16,
        topic: &str,
        callback: &str,
    ) -> Result<SubscribeSeen, String> {
        let since = self.journal().subscribes.len();
        let process = FactoryProcess::start(
            &self.args.factory,
            port,
            self.broker.address(),
            self.args.tls_dir.as_deref(),
        )
        .map_err(|error| format!("cannot start the command with sh: {error}"))?;
        self.instances.push(process);
        // A factory that has subscribed to anything has started: the subscription asked for,
        // if it makes one, comes within a check's deadline, not a start's.
        let start_timeout = self.args.start_timeout.into();
        let started = self
            .wait(start_timeout, |journal| {
                journal.subscribes[since..]
                    .iter()
                    .any(|seen| seen.refusal.is_none())
            })
            .await;
        let others = self.subscribes_since(since);
        match started {
            Waited::Done => {
                self.subscription_since(since, topic, callback, self.check_timeout())
                    .await
            }
            Waited::Exited(Exit { status, last_words }) => Err(format!(
                "the factory {status} before it subscribed{others}{last_words}"
            )),
            Waited::TimedOut(_) => Err(format!(
                "no subscription within {start_timeout:?} of the start{others}"
            )),
        }
    }

    /// Waits for a subscription to `topic` with `callback` made after the `since`th subscribe.
    pub async fn subscription_since(
        &mut self,
        since: usize,
        topic: &str,
        callback: &str,
        within: Duration,
    ) -> Result<SubscribeSeen, String> {
        let accepted = |journal: &Journal| {
            journal.subscribes[since..]
                .iter()
                .find(|seen| {
                    seen.refusal.is_none()
                        && seen.subscription.topic == topic
                        && seen.subscription.callback == callback
                })
                .cloned()
        };
        let waited = self
            .wait(within, |journal| accepted(journal).is_some())
            .await;
        let journal = self.journal();
        if let Some(seen) = accepted(&journal) {
            return Ok(seen);
        }
        drop(journal);
        let others = self.subscribes_since(since);
        Err(match waited {
            Waited::Exited(Exit { status, last_words }) => {
                format!("the factory {status} before it subscribed{others}{last_words}")
            }
            _ => format!("no subscription to {topic:?} with {callback} within {within:?}{others}"),
        })
    }

    /// ` (a subscribe … was refused: …; … subscribed to …)`: the subscribes after the `since`th,
    /// or nothing when there were none.
    fn subscribes_since(&self, since: usize) -> String {
        let journal = self.journal();
        let seen: Vec<String> = journal.subscribes[since..]
            .iter()
            .map(|seen| {
                let Subscription {
                    topic,
                    factory_address,
                    callback,
                    ..
                } = &seen.subscription;
                match &seen.refusal {
                    Some(refusal) => format!(
                        "a subscribe to {topic:?} from {factory_address} with {callback:?} was refused: {refusal}"
                    ),
                    None => format!("{factory_address} subscribed to {topic:?} with {callback:?}"),
                }
            })
            .collect();
        if seen.is_empty() {
            String::new()
        } else {
            format!(" ({})", seen.join("; "))
        }
    }

    /// Publishes `jobs` to `topic` in order, as a miner of the harness: their ids.
    pub async fn publish(&mut self, topic: &str, jobs: &[Job]) -> Result<Vec<JobId>, String> {
        let mut link = transport::LinkConfig::to(self.broker.address().to_string());
        link.tls = self.broker.client_tls();
        let within = self.check_timeout();
        let published = tokio::time::timeout(
            within,
            miner::publish_jobs(link, topic, super::TOPIC_BUFFER, jobs),
        )
        .await;
        match published {
            Ok(Ok(ids)) => {
                self.own
                    .extend(ids.iter().map(|id| (topic.to_owned(), *id)));
                Ok(ids)
            }
            Ok(Err(error)) => Err(format!("the harness could not publish to {topic:?}: {error}")),
            Err(_) => Err(format!(
                "the harness could not publish to {topic:?} within {within:?} (is the factory flooding the broker?)"
            )),
        }
    }

    /// Waits until every job of `ids` on `topic` is answered, then gives each job's answer.
    pub async fn answers(&mut self, topic: &str, ids: &[JobId]) -> (Vec<Answer>, Waited) {
        let waited = self
            .wait(self.check_timeout(), |journal| {
                ids.iter()
                    .all(|id| answer_of(journal, topic, *id).is_final())
            })
            .await;
        let journal = self.journal();
        let answers = ids
            .iter()
            .map(|id| answer_of(&journal, topic, *id))
            .collect();
        (answers, waited)
    }

    /// Whether job `id` of `topic` is one the harness published.
    pub fn is_own(&self, topic: &str, id: JobId) -> bool {
        self.own.contains(&(topic.to_owned(), id))
    }

    /// The jobs the factory published to `topic` (not the harness's own).
    pub fn published_by_factory(&self, topic: &str) -> Vec<(JobId, Job)> {
        self.journal()
            .publishes
            .iter()
            .filter(|seen| {
                seen.topic == topic && !self.own.contains(&(seen.topic.clone(), seen.id))
            })
            .map(|seen| (seen.id, seen.job))
            .collect()
    }

    /// Waits until `done` holds of the journal, a factory instance exits, or `within` passes.
    pub async fn wait(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&Journal) -> bool,
    ) -> Waited {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if done(&self.journal()) {
                return Waited::Done;
            }
            if let Some(exit) = self
                .instances
                .iter_mut()
                .find_map(FactoryProcess::describe_exit)
            {
                // The lines it printed last may still be in the pipe.
                tokio::time::sleep(POLL * 5).await;
                let exit = self
                    .instances
                    .iter_mut()
                    .find_map(FactoryProcess::describe_exit)
                    .unwrap_or(exit);
                return Waited::Exited(exit);
            }
            if tokio::time::Instant::now() >= deadline {
                return Waited::TimedOut(within);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether any instance has exited.
    pub fn any_exited(&mut self) -> Option<Exit> {
        self.instances
            .iter_mut()
            .find_map(FactoryProcess::describe_exit)
    }

    /// Stops the instance started on `port` as Ctrl-C would, and forgets it.
    pub async fn stop(&mut self, port: u16) -> Option<Stopped> {
        let index = self
            .instances
            .iter()
            .position(|instance| instance.port == port)?;
        let mut instance = self.instances.remove(index);
        Some(instance.stop(self.args.stop_timeout.into()).await)
    }

    /// Kills every instance and stops the broker.
    pub async fn end(mut self) {
        for instance in &mut self.instances {
            instance.kill().await;
        }
        self.broker.stop().await;
    }
}

/// What became of job `id` of `topic`, from the latest outcome that settled it or put it back.
pub fn answer_of(journal: &Journal, topic: &str, id: JobId) -> Answer {
    let mut answer = Answer::Nothing;
    for outcome in &journal.outcomes {
        match outcome {
            Outcome::Completed {
                topic: of,
                job_id,
                result,
                factory,
                ..
            } if **of == *topic && *job_id == id => {
                return Answer::Value {
                    result: *result,
                    factory: factory.to_string(),
                }
            }
            Outcome::Failed {
                topic: of,
                job_id,
                error,
                ..
            } if **of == *topic && *job_id == id => return Answer::Error(error.to_string()),
            Outcome::Requeued {
                topic: of,
                job_id,
                reason,
                ..
            } if **of == *topic && *job_id == id => answer = Answer::CallFailed(reason.clone()),
            // Its calls failed as often as the broker allows: no answer will come.
            Outcome::Undeliverable {
                topic: of,
                job_id,
                deliveries,
                reason,
                ..
            } if **of == *topic && *job_id == id => {
                return Answer::CallFailed(format!(
                    "delivered {deliveries} times; every call failed: {reason}"
                ))
            }
            _ => {}
        }
    }
    answer
}
