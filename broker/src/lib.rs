//! The pairbroker broker: topics of jobs, each job taken by exactly one subscribed factory.
//!
//! - [`queue`]: the queue core, free of RPC: the [`queue::JobStore`] trait and its in-memory
//!   implementation.
//! - [`requests`]: [`Broker`], the four requests (create a channel, publish, subscribe,
//!   unsubscribe) checked and carried out over a store.
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
//! - [`cli`]: the command line of the `broker` program.

pub mod cli;
pub mod dispatcher;
pub mod go;
pub mod http;
pub mod metrics;
pub mod outcome;
pub mod queue;
pub mod requests;
pub mod server;
pub mod service;
pub mod stats;
pub mod subscriptions;

pub use outcome::{count_results, print_results, Callback, Observer, Outcome};
pub use requests::{Broker, Request, Settings, Watcher};
pub use server::serve;
