//! Reaching the cluster: connecting, and waiting while it is not ready yet.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::names::DEAD_LETTERS;
use super::{JetStreamConfig, JetStreamError, JetStreamStore};

/// The pause between two tries of a cluster that a starting broker cannot reach, or that is
/// not ready (electing its leaders): short, since clients are told to wait meanwhile.
const READY_RETRY: Duration = Duration::from_secs(1);
/// How long one try waits for JetStream's answer at start. A cluster still electing its
/// leaders may leave a request unanswered, and the client's own request timeout (10 s) per try
/// would keep the broker waiting that long after the cluster is ready.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one try waits for a NATS server to take the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The oldest nats-server release not known to lose jobs: 2.9.10 (Debian bookworm's) answers
/// some publishes to a full replicated stream with another job's sequence, and stores not all
/// of those it acknowledged (`tests/tests/cluster_faults.rs` finds it; 2.15.1 passes).
const TRUSTED_VERSION: (u64, u64) = (2, 10);

impl JetStreamStore {
    /// Connects to the cluster and makes sure the dead-letter stream exists. A cluster not
    /// reachable yet, or not ready (electing its leaders), is waited for, a line logged per
    /// try, for as long as it takes: the caller stops waiting by dropping the future. What
    /// waiting would not mend (a host name that does not resolve, credentials refused) is an
    /// error at once.
    pub async fn connect(config: JetStreamConfig) -> Result<Self, JetStreamError> {
        let servers = config.servers.join(",");
        let failed = |reason: &dyn std::fmt::Display| JetStreamError {
            servers: servers.clone(),
            reason: reason.to_string(),
        };
        let client = dial(&config, &servers)
            .await
            .map_err(|error| failed(&error))?;
        let version = client.server_info().version;
        if !is_trusted_version(&version) {
            tracing::warn!(
                "nats-server {version} is older than {}.{}: 2.9.10 was seen acknowledging publishes to a full \
                 replicated stream with wrong sequences, losing jobs; 2.15.1 passes our fault test",
                TRUSTED_VERSION.0,
                TRUSTED_VERSION.1
            );
        }
        let js = jetstream::new(client.clone());
        wait_ready(&js, &config, &servers)
            .await
            .map_err(|error| failed(&error))?;
        Ok(Self {
            client,
            js,
            config,
            topics: Default::default(),
            #[cfg(test)]
            server: None,
        })
    }
}

/// Logs that the broker waits for the cluster.
fn waiting(servers: &str, reason: &dyn std::fmt::Display) {
    tracing::warn!(
        "waiting for JetStream at {servers}: {reason}; trying again in {}",
        transport::words::Rounded(READY_RETRY)
    );
}

/// Connects to one of the servers, trying again while none takes the connection.
async fn dial(
    config: &JetStreamConfig,
    servers: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    loop {
        let connected = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(config.servers.as_slice())
            .await;
        match connected {
            Ok(client) => return Ok(client),
            Err(error) if may_connect_yet(&error) => waiting(servers, &error),
            Err(error) => return Err(error),
        }
        tokio::time::sleep(READY_RETRY).await;
    }
}

/// Makes sure the dead-letter stream exists. Its answering is the sign that JetStream is
/// ready: a cluster that lost a node a moment ago may take seconds to elect its leaders, and
/// the broker waits.
async fn wait_ready(
    js: &jetstream::Context,
    config: &JetStreamConfig,
    servers: &str,
) -> Result<(), jetstream::context::CreateStreamError> {
    let dead_letters = stream::Config {
        name: DEAD_LETTERS.into(),
        subjects: vec![format!("{DEAD_LETTERS}.>")],
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        max_messages_per_subject: config.dead_letter_limit.max(1) as i64,
        ..Default::default()
    };
    loop {
        let probe = js.get_or_create_stream(dead_letters.clone());
        match tokio::time::timeout(READY_PROBE_TIMEOUT, probe).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(error)) if is_transient(&error) => waiting(servers, &error),
            Ok(Err(error)) => return Err(error),
            Err(_) => waiting(
                servers,
                &format_args!(
                    "no answer within {}",
                    transport::words::Rounded(READY_PROBE_TIMEOUT)
                ),
            ),
        }
        tokio::time::sleep(READY_RETRY).await;
    }
}

/// Whether `version` (`2.15.1`) is [`TRUSTED_VERSION`] or later.
pub(super) fn is_trusted_version(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|part| part.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= TRUSTED_VERSION,
        _ => false,
    }
}

/// Whether connecting to NATS failed for a while only: no server taking connections yet. A
/// host name that does not resolve, or credentials or TLS refused, will not mend by waiting.
fn may_connect_yet(error: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    matches!(
        error.kind(),
        Kind::Io | Kind::TimedOut | Kind::MaxReconnects
    )
}

/// Whether creating a stream failed for a while only: no answer in time, or a cluster still
/// electing its leaders.
fn is_transient(error: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::context::CreateStreamErrorKind as Kind;
    use jetstream::ErrorCode;
    match error.kind() {
        Kind::TimedOut | Kind::JetStreamUnavailable => true,
        Kind::JetStream(error) => [
            ErrorCode::CLUSTER_NOT_AVAILABLE,
            ErrorCode::CLUSTER_NOT_ACTIVE,
            ErrorCode::CLUSTER_NOT_LEADER,
            ErrorCode::CLUSTER_NOT_ASSIGNED,
        ]
        .contains(&error.error_code()),
        _ => false,
    }
}
