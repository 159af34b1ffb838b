//! The pairbroker broker: topics of jobs, each job taken by exactly one subscribed factory.
//!
//! - [`run()`]: a whole broker built from its [`Config`]: its store opened, then served until
//!   shutdown.
//! - [`queue`]: the queue core, free of RPC: the [`queue::JobStore`] trait and its stores, in
//!   memory, on disk and in NATS JetStream.
//! - [`store`]: which store a broker opens, as a value: [`StoreConfig`] and [`Store`].
//! - [`requests`]: [`BrokerState`], the broker's state, and its requests (topics, publishes,
//!   subscriptions, and what it reports of them) checked and carried out over its store.
//! - [`settings`]: the broker's tunable limits.
//! - [`dispatcher`]: one subscription's loop, calling its factory back with each job.
//! - [`subscriptions`]: the registry of subscriptions in force.
//! - [`metrics`]: latency, rate and per-subscription counters, for `stats` and `/metrics`, and
//!   the process's own figures.
//! - [`outcome`]: what became of each job, and the lab's result lines.
//! - [`service`] and [`server`]: the tarpc adapter and the TCP server.
//! - [`go`]: Go's net/rpc, for the Go lab's own programs: a front door and a way to call
//!   factories.
//! - [`http`]: `/metrics`, `/api/stats` and the dashboard page.
//! - [`stats`]: `broker stats`, the figures as a table or JSON.
//! - [`cli`] and [`program`]: the command line of the `broker` program, and what it does.

pub mod cli;
pub mod dispatcher;
pub mod go;
pub mod http;
pub mod metrics;
pub mod outcome;
pub mod program;
pub mod queue;
pub mod requests;
pub mod run;
pub mod server;
pub mod service;
pub mod settings;
pub mod stats;
pub mod store;
pub mod subscriptions;

pub use outcome::{count_results, print_results, Observer, Outcome};
pub use requests::{BrokerState, Request, Watcher};
pub use run::{open, run, Config, Ready};
pub use settings::Settings;
pub use store::{Store, StoreConfig, StoreError};
