//! [`Settings`]: the broker's tunable limits, and their defaults with the reasons for them.

use std::num::NonZeroU32;
use std::time::Duration;

use transport::Admission;

/// How long a factory may take to answer one call by default before its job is put back.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How many topics a broker holds by default.
pub const DEFAULT_MAX_TOPICS: usize = 1_024;

/// How many times a job is delivered by default before a failed call dead-letters it: enough
/// for a job to outlive a few factories that die of other causes, few enough that a job that
/// kills every factory it reaches stops after taking down a handful (RabbitMQ's quorum queues
/// and JetStream's MaxDeliver set the same kind of limit).
pub const DEFAULT_MAX_DELIVERIES: NonZeroU32 = NonZeroU32::new(5).expect("five is not zero");

/// The broker's tunable limits.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a factory may take to answer one call before its job is put back.
    pub call_timeout: Duration,
    /// How long `subscribe` waits to connect to a factory.
    pub connect_timeout: Duration,
    /// Who may connect, and how many at once. Its token is also offered to factories.
    pub admission: Admission,
    /// TLS to dial pairbroker factories with; none dials them in plain TCP. Go factories are
    /// always dialled in plain TCP: net/rpc has no TLS of ours.
    pub factory_tls: Option<transport::ClientTls>,
    /// How many topics the broker holds at most, so that no client can grow its memory
    /// without bound by creating topics.
    pub max_topics: usize,
    /// How many times a job may be delivered before a failed call dead-letters it instead of
    /// putting it back, so that a job that brings down every factory it reaches stops
    /// (`None`: no limit).
    pub max_deliveries: Option<NonZeroU32>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            call_timeout: DEFAULT_CALL_TIMEOUT,
            connect_timeout: transport::DEFAULT_CONNECT_TIMEOUT,
            admission: Admission::default(),
            factory_tls: None,
            max_topics: DEFAULT_MAX_TOPICS,
            max_deliveries: Some(DEFAULT_MAX_DELIVERIES),
        }
    }
}
