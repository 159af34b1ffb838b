//! Serving a [`BrokerState`] on a TCP listener until shutdown: tarpc clients, and Go's net/rpc
//! clients on the same port.

use std::sync::Arc;

use futures::StreamExt;
use stubs::Broker as _;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::requests::BrokerState;
use crate::service::BrokerService;

/// Serves `broker` on `listener` until `shutdown` is cancelled, then waits for its
/// connections to close and its dispatchers to finish their calls in flight.
pub async fn serve(broker: Arc<BrokerState>, listener: TcpListener, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    let service = BrokerService::new(broker.clone());
    let admission = broker.settings().admission.clone();
    let max_requests = admission.max_requests_per_connection;
    let stop_connections = shutdown.clone();
    // Go's net/rpc clients on the same port: the lab's own programs, unchanged. They cannot
    // speak TLS, so a broker with TLS does not serve them.
    let go_clients: Option<transport::OtherProtocol> = if admission.tls.is_some() {
        tracing::info!(
            "TLS is on: every client must speak it, so the Go front door (Go's net/rpc) is off"
        );
        None
    } else {
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        Some(Arc::new(move |stream, read, peer| {
            Box::pin(crate::go::serve_connection(
                broker.clone(),
                stream,
                read,
                peer,
                shutdown.clone(),
            ))
        }))
    };
    transport::accept_or(
        listener,
        admission,
        shutdown.clone(),
        connections.clone(),
        move |stream, peer| {
            let service = service.clone();
            let shutdown = stop_connections.clone();
            async move {
                let requests = BaseChannel::with_defaults(transport::framed(stream))
                    // A client that sends requests and never reads the replies holds at most
                    // this many tasks.
                    .max_concurrent_requests(max_requests)
                    .execute(service.serve())
                    // The connection's requests run side by side, so that a publish waiting for
                    // room does not hold up the requests behind it; in the connection's own task,
                    // because spawning a task costs more than most requests do.
                    .for_each_concurrent(None, |request| request);
                tokio::select! {
                    _ = requests => tracing::debug!("the connection from {peer} closed"),
                    _ = shutdown.cancelled() => {}
                }
            }
        },
        go_clients,
    )
    .await;
    connections.close();
    connections.wait().await;
    broker.dispatchers_finished().await;
}
