//! Go's net/rpc, the RPC of the lab's own Go programs: a second front door beside tarpc, and a
//! second way to call a factory back. Neither holds queue logic.
//!
//! - [`service`]: `Broker.CreateChannel`, `Broker.Publish` and `Broker.Subscribe` for Go
//!   clients on the broker's port, each forwarded to [`crate::BrokerState`].
//! - [`factory`]: [`GoFactory`], a Go factory that a dispatcher calls by method name.

pub mod factory;
pub mod service;

pub use factory::GoFactory;
pub use service::serve_connection;
