//! The `broker` program's command line.

use clap::Parser;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use transport::{AccessToken, Admission};

use crate::queue::DEFAULT_DEAD_LETTER_LIMIT;
use crate::requests::{Settings, DEFAULT_CALL_TIMEOUT};

/// The port the lab's broker listens on.
pub const DEFAULT_PORT: u16 = 8030;

/// The pairbroker broker: miners publish jobs to topics, and each job is called back on exactly
/// one subscribed factory.
#[derive(Debug, Clone, Parser)]
#[command(name = "broker", version)]
pub struct Cli {
    /// The TCP port to listen on.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// The address to listen on. The default serves this machine only; `--bind 0.0.0.0` serves
    /// other machines too, and anyone who can reach the port can then publish and subscribe.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// How long a factory may take to answer one call before its job goes back to its topic
    /// and the subscription is dropped (e.g. `10s`, `500ms`).
    #[arg(long, default_value_t = DEFAULT_CALL_TIMEOUT.into())]
    pub call_timeout: humantime::Duration,
    /// How long `subscribe` waits to connect to a factory.
    #[arg(long, default_value_t = transport::DEFAULT_CONNECT_TIMEOUT.into())]
    pub connect_timeout: humantime::Duration,
    /// How many failed jobs each topic keeps in its dead-letter list; older ones are dropped
    /// (and counted) first.
    #[arg(long, default_value_t = DEFAULT_DEAD_LETTER_LIMIT)]
    pub dead_letter_limit: usize,
    /// A shared secret that every miner and factory must give (and that the broker gives the
    /// factories it calls). Without it, anyone who can reach the port can use the broker.
    #[arg(long, env = "PAIRBROKER_TOKEN", hide_env_values = true)]
    pub token: Option<AccessToken>,
    /// Connections held at once; more are closed at once.
    #[arg(long, default_value_t = transport::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Connections held at once from one IP address.
    #[arg(long, default_value_t = transport::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// Requests in flight at once on one connection.
    #[arg(long, default_value_t = transport::DEFAULT_MAX_REQUESTS_PER_CONNECTION)]
    pub max_requests_per_connection: usize,
}

impl Cli {
    /// The address to listen on.
    pub fn listen_address(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// The broker's limits.
    pub fn settings(&self) -> Settings {
        Settings {
            call_timeout: self.call_timeout.into(),
            connect_timeout: self.connect_timeout.into(),
            admission: Admission {
                token: self.token.clone().unwrap_or_default(),
                max_connections: self.max_connections,
                max_connections_per_ip: self.max_connections_per_ip,
                max_requests_per_connection: self.max_requests_per_connection,
            },
        }
    }
}
