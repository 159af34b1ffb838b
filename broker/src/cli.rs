//! The `broker` program's command line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lab_console::usage::{at_least, duration_from_to, from_to};
use lab_console::LogFormat;
use transport::{AccessToken, Admission, TlsFiles};

use crate::queue::{Fsync, DEFAULT_DEAD_LETTER_LIMIT};
use crate::settings::{Settings, DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_DELIVERIES, DEFAULT_MAX_TOPICS};

/// The port the lab's broker listens on.
pub const DEFAULT_PORT: u16 = 8030;

/// The copies of each topic JetStream keeps unless told: one, the most a single NATS server
/// can keep.
pub const DEFAULT_REPLICAS: u8 = 1;

/// The shortest timeout: a shorter one fails every call.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// The longest timeout: a longer one overflows deadlines.
const MAX_TIMEOUT: Duration = Duration::from_secs(3_600);

const EXAMPLES: &str = "\
Examples:
  cargo run -p broker                                  # serve on 127.0.0.1:8030
  cargo run -p broker -- --port 9000 --call-timeout 2s
  cargo run -p broker -- --quiet                       # a count per second, not a line per job
  PAIRBROKER_TOKEN=s3cret cargo run -p broker -- --bind 0.0.0.0
  cargo run -p broker -- stats                         # what a running broker is doing
  cargo run -p broker -- stats --watch                 # ... redrawn every second
  cargo run -p broker -- stats --json
  cargo run -p broker -- dead-letters                  # the jobs that failed, every topic's
  cargo run -p broker -- dead-letters --topic divide --json
  cargo run -p broker -- tls-init tls                  # a development CA and certificate in tls/
  cargo run -p broker -- --tls-dir tls                 # ... then serve, and dial factories, in TLS";

const STATS_EXAMPLES: &str = "\
Examples:
  cargo run -p broker -- stats                         # the broker on 127.0.0.1:8030
  cargo run -p broker -- stats --watch                 # redrawn every second until Ctrl-C
  cargo run -p broker -- stats --json > stats.json
  cargo run -p broker -- stats --broker 10.0.0.5:8030 --token s3cret";

const DEAD_LETTER_EXAMPLES: &str = "\
Examples:
  cargo run -p broker -- dead-letters                  # every topic's
  cargo run -p broker -- dead-letters --topic divide
  cargo run -p broker -- dead-letters --json > dead-letters.json
  cargo run -p broker -- dead-letters --broker 10.0.0.5:8030 --token s3cret";

/// The pairbroker broker: miners publish jobs to topics, and each job is called back on exactly
/// one subscribed factory.
#[derive(Debug, Clone, Parser)]
#[command(name = "broker", version, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Something other than serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How to serve.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// How logs are written to standard error.
    ///
    /// `text`, one readable line per event; `json`, one object per event, for log collectors.
    /// `RUST_LOG` chooses which events.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text, global = true, help_heading = "Output")]
    pub log_format: LogFormat,
}

/// What the broker program can do besides serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Show what a running broker is doing: its topics and subscribers.
    #[command(after_help = STATS_EXAMPLES)]
    Stats(StatsArgs),
    /// List the jobs that failed on a running broker and are kept as dead letters: every
    /// topic's, or one topic's.
    #[command(after_help = DEAD_LETTER_EXAMPLES)]
    DeadLetters(DeadLetterArgs),
    /// Write a development CA and a certificate for this machine (127.0.0.1, ::1, localhost)
    /// into DIR: ca.pem, cert.pem and key.pem, for every program's --tls-dir DIR.
    #[command(after_help = TLS_INIT_EXAMPLES)]
    TlsInit(TlsInitArgs),
}

const TLS_INIT_EXAMPLES: &str = "\
Examples:
  cargo run -p broker -- tls-init tls                  # then every program with --tls-dir tls
  cargo run -p broker -- --tls-dir tls &
  cargo run -p lab -- --tls-dir tls                    # the lab's own broker and factories in TLS";

/// Options of `broker tls-init`.
#[derive(Debug, Clone, Args)]
pub struct TlsInitArgs {
    /// The directory to write ca.pem, cert.pem and key.pem into.
    ///
    /// Created if missing. An existing file is never overwritten.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Which running broker to ask, and how: the options every command that asks one shares.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// The broker to ask.
    ///
    /// The address it serves on: its --bind and --port.
    #[arg(long, value_name = "HOST:PORT", default_value = lab_console::DEFAULT_BROKER, value_parser = lab_console::usage::broker_address, help_heading = "Broker")]
    pub broker: String,
    /// The broker's shared secret.
    ///
    /// The --token the broker was started with; without it, a broker that has one refuses to
    /// answer.
    #[arg(
        long,
        value_name = "SECRET",
        env = "PAIRBROKER_TOKEN",
        hide_env_values = true,
        help_heading = "Broker"
    )]
    pub token: Option<AccessToken>,
    /// TLS to dial the broker with.
    #[command(flatten)]
    pub tls: lab_console::DialTls,
}

impl BrokerArgs {
    /// The TLS files these options name.
    pub fn tls_files(&self) -> TlsFiles {
        self.tls.files()
    }
}

/// Options of `broker stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// The broker to ask, and its secret.
    #[command(flatten)]
    pub target: BrokerArgs,
    /// Print one JSON object instead of tables.
    ///
    /// For scripts: the object the broker's HTTP server also serves at /api/stats.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    /// Show the figures again every second until Ctrl-C.
    ///
    /// On a terminal, redrawn in place like `top`; into a pipe or a file, each snapshot after a
    /// blank line (with --json, one object a line), without terminal codes.
    #[arg(long, help_heading = "Output")]
    pub watch: bool,
}

/// Options of `broker dead-letters`.
#[derive(Debug, Clone, Args)]
pub struct DeadLetterArgs {
    /// The broker to ask, and its secret.
    #[command(flatten)]
    pub target: BrokerArgs,
    /// Only this topic's dead letters.
    ///
    /// Without it, every topic's.
    #[arg(long, value_name = "TOPIC", help_heading = "Output")]
    pub topic: Option<String>,
    /// Print one JSON object instead of tables.
    ///
    /// For scripts: the object the broker's HTTP server serves at /api/dead-letters.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

/// Options of the broker itself.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The TCP port to listen on.
    ///
    /// Miners and factories reach the broker at --bind's address and this port (their --broker).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT, allow_negative_numbers = true, value_parser = from_to("the port", 0u16, u16::MAX), help_heading = "Network")]
    pub port: u16,
    /// The address to listen on.
    ///
    /// The default serves this machine only; `--bind 0.0.0.0` serves other machines too, and
    /// anyone who can reach the port can then publish and subscribe (set --token).
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST), help_heading = "Network")]
    pub bind: IpAddr,
    /// Where to serve the dashboard, /metrics and the JSON API, or `off`.
    ///
    /// An address and a port: the dashboard page at `/`, Prometheus metrics at /metrics, and
    /// JSON at /api/stats and /api/dead-letters (the objects of `broker stats --json` and
    /// `broker dead-letters --json`). `off` serves none of them.
    #[arg(long, value_name = "IP:PORT|off", default_value = crate::http::DEFAULT_HTTP_ADDRESS, help_heading = "Network")]
    pub http: HttpSetting,
    /// A shared secret that every miner and factory must give.
    ///
    /// The broker gives it too, to the factories it calls. Without it, anyone who can reach
    /// the port can use the broker.
    #[arg(
        long,
        value_name = "SECRET",
        env = "PAIRBROKER_TOKEN",
        hide_env_values = true,
        help_heading = "Network"
    )]
    pub token: Option<AccessToken>,
    /// The certificate to serve with.
    #[command(flatten)]
    pub certificate: lab_console::ServeTls,
    /// TLS to dial factories with.
    #[command(flatten)]
    pub tls: lab_console::DialTls,
    /// Keep topics, jobs and dead letters on disk in DIR.
    ///
    /// DIR is created if missing. A broker restarted on it, after a crash too, still holds
    /// every job it acknowledged. Without it, jobs live in the broker's memory only. One broker
    /// at a time may use a DIR.
    #[arg(long, value_name = "DIR", help_heading = "Storage")]
    pub data_dir: Option<PathBuf>,
    /// With --data-dir, when writes are synced to the disk [default: always].
    ///
    /// `always`: before a publish is acknowledged (nothing acknowledged is lost, even in a power
    /// cut). A duration from 1ms to 1h such as `100ms`: at least that often (a crash or a power
    /// cut may lose what was acknowledged since the last sync). `never`: only when the broker
    /// stops (a crash or a power cut loses every job acknowledged since it started).
    #[arg(
        long,
        value_name = "always|DURATION|never",
        allow_negative_numbers = true,
        help_heading = "Storage"
    )]
    pub fsync: Option<FsyncSetting>,
    /// Keep topics in a NATS JetStream cluster instead of this process.
    ///
    /// `nats://HOST:PORT`, several separated by commas (`nats://a:4222,b:4222`). Brokers on
    /// one cluster share their topics: a job published through any of them goes to a factory
    /// subscribed to any of them. Until the cluster answers, the broker tells the clients that
    /// come that it is not ready yet.
    #[arg(
        long,
        value_name = "nats://HOST:PORT[,HOST:PORT...]",
        conflicts_with = "data_dir",
        help_heading = "Storage"
    )]
    pub store: Option<NatsServers>,
    /// With --store, the copies JetStream keeps of each topic [default: 1].
    ///
    /// 1, or 3 on a cluster of three nodes or more (a node may then die and no job is lost).
    /// From 1 to 5.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = from_to("the replica count", 1u8, 5), help_heading = "Storage")]
    pub replicas: Option<u8>,
    /// How many failed jobs each topic keeps in its dead-letter list.
    ///
    /// Older ones are dropped (and counted) first. From 0 to 10000, so that the list fits one
    /// reply.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DEAD_LETTER_LIMIT as u32, allow_negative_numbers = true, value_parser = from_to("the dead-letter limit", 0u32, 10_000), help_heading = "Storage")]
    pub dead_letter_limit: u32,
    /// How long a factory may take to answer one call.
    ///
    /// After it, the job goes back to its topic and the subscription is dropped. A duration
    /// with its unit (e.g. `10s`, `500ms`), from 1ms to 1h.
    #[arg(long, value_name = "DURATION", default_value_t = DEFAULT_CALL_TIMEOUT.into(), allow_negative_numbers = true, value_parser = duration_from_to("the call timeout", MIN_TIMEOUT, MAX_TIMEOUT), help_heading = "Limits")]
    pub call_timeout: humantime::Duration,
    /// How long `subscribe` waits to connect to a factory.
    ///
    /// From 1ms to 1h. A subscription whose factory cannot be reached in time fails.
    #[arg(long, value_name = "DURATION", default_value_t = transport::DEFAULT_CONNECT_TIMEOUT.into(), allow_negative_numbers = true, value_parser = duration_from_to("the connect timeout", MIN_TIMEOUT, MAX_TIMEOUT), help_heading = "Limits")]
    pub connect_timeout: humantime::Duration,
    /// How many times a job is delivered before a failed call dead-letters it.
    ///
    /// A call fails when the factory died, hung or closed the connection; until the limit, the
    /// job goes back to its topic, after it, to the dead letters, so that a job that brings down
    /// every factory it reaches stops. `0`: no limit, the job always goes back.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_DELIVERIES.get(), allow_negative_numbers = true, value_parser = at_least("the delivery limit", 0u32), help_heading = "Limits")]
    pub max_deliveries: u32,
    /// How many topics the broker holds at most.
    ///
    /// From 1 to 4096. Creating one more is refused.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TOPICS as u32, allow_negative_numbers = true, value_parser = from_to("the topic limit", 1u32, 4_096), help_heading = "Limits")]
    pub max_topics: u32,
    /// Connections held at once, once past their handshake.
    ///
    /// A client beyond it is refused in its handshake, and told why. Connections still in
    /// their handshake do not count (see --max-handshaking-per-ip). From 1 to 65536.
    #[arg(long, value_name = "N", default_value_t = transport::DEFAULT_MAX_CONNECTIONS as u32, allow_negative_numbers = true, value_parser = from_to("the connection limit", 1u32, 65_536), help_heading = "Limits")]
    pub max_connections: u32,
    /// Connections held at once from one IP address, once past their handshake.
    ///
    /// A client beyond it is refused in its handshake, and told why, so that one host cannot
    /// take every connection. From 1 to 65536.
    #[arg(long, value_name = "N", default_value_t = transport::DEFAULT_MAX_CONNECTIONS_PER_IP as u32, allow_negative_numbers = true, value_parser = from_to("the connection limit per IP address", 1u32, 65_536), help_heading = "Limits")]
    pub max_connections_per_ip: u32,
    /// Connections from one IP address still in their handshake at once.
    ///
    /// A newer one closes the oldest, so that idle connections cannot lock out the real
    /// clients behind the same address (a lab machine, a NAT), who finish their handshake in
    /// microseconds. From 1 to 65536.
    #[arg(long, value_name = "N", default_value_t = transport::DEFAULT_MAX_HANDSHAKING_PER_IP as u32, allow_negative_numbers = true, value_parser = from_to("the handshaking limit per IP address", 1u32, 65_536), help_heading = "Limits")]
    pub max_handshaking_per_ip: u32,
    /// Requests in flight at once on one connection.
    ///
    /// From 1 to 65536.
    #[arg(long, value_name = "N", default_value_t = transport::DEFAULT_MAX_REQUESTS_PER_CONNECTION as u32, allow_negative_numbers = true, value_parser = from_to("the request limit per connection", 1u32, 65_536), help_heading = "Limits")]
    pub max_requests_per_connection: u32,
    /// Threads that serve requests and dispatch jobs.
    ///
    /// One is fastest while the miners and factories share the machine; more pay off when the
    /// broker has cores of its own. From 1 to 256.
    #[arg(long, value_name = "N", default_value_t = 1, allow_negative_numbers = true, value_parser = from_to("the thread count", 1u16, 256), help_heading = "Limits")]
    pub threads: u16,
    /// No line per job on standard output.
    ///
    /// A count of jobs per second is logged instead: for load, where a line per job costs more
    /// than the job.
    #[arg(long, help_heading = "Output")]
    pub quiet: bool,
}

/// The shortest `--fsync` interval: a shorter one is `always` in all but name.
const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(1);
/// The longest `--fsync` interval: a longer one is `never` in all but name.
const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(3_600);

/// `--fsync`: `always`, `never`, or an interval from 1ms to 1h, with its unit as every
/// duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsyncSetting(pub Fsync);

impl std::str::FromStr for FsyncSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "always" => Ok(Self(Fsync::Always)),
            "never" => Ok(Self(Fsync::Never)),
            // A number is meant as an interval: say what is wrong with it.
            interval if interval.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
                duration_from_to("the sync interval", MIN_SYNC_INTERVAL, MAX_SYNC_INTERVAL)(
                    interval,
                )
                .map(|every| Self(Fsync::Interval(every.into())))
            }
            _ => Err("expected always, never or a duration such as 100ms".to_owned()),
        }
    }
}

impl From<FsyncSetting> for Fsync {
    fn from(setting: FsyncSetting) -> Self {
        setting.0
    }
}

/// `--store`: the servers of a NATS cluster, each `nats://HOST:PORT`. Written as the NATS
/// tools take them: the scheme once for the list (`nats://a:4222,b:4222`) or on each server
/// (`nats://a:4222,nats://b:4222`), or mixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsServers(pub Vec<String>);

/// What `--store` takes, for the errors that refuse another form.
const NATS_SERVERS: &str =
    "expected nats://HOST:PORT[,HOST:PORT...], e.g. nats://127.0.0.1:4222,127.0.0.1:4223";

impl std::str::FromStr for NatsServers {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        const SCHEME: &str = "nats://";
        let mut servers = Vec::new();
        for (index, server) in text.split(',').map(str::trim).enumerate() {
            // The first server names the scheme for the list; the others may repeat it.
            let address = match server.strip_prefix(SCHEME) {
                Some(address) => address,
                None if index > 0 && !server.contains("://") => server,
                None => return Err(format!("{server:?} is not a NATS server: {NATS_SERVERS}")),
            };
            let port_given = address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_given {
                return Err(format!("{server:?} is not HOST:PORT: {NATS_SERVERS}"));
            }
            servers.push(format!("{SCHEME}{address}"));
        }
        Ok(Self(servers))
    }
}

/// `--http`: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpSetting(pub Option<SocketAddr>);

impl std::str::FromStr for HttpSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "off" {
            return Ok(Self(None));
        }
        text.parse()
            .map(|address| Self(Some(address)))
            .map_err(|_| {
                format!("expected an address such as 127.0.0.1:8081, or off; not {text:?}")
            })
    }
}

impl ServeArgs {
    /// The address to listen on.
    pub fn listen_address(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// When writes to `--data-dir` are synced: `--fsync`, or `always`.
    pub fn fsync(&self) -> Fsync {
        self.fsync.map_or(Fsync::Always, Fsync::from)
    }

    /// The TLS files these options name.
    pub fn tls_files(&self) -> TlsFiles {
        self.tls.files_with(&self.certificate)
    }

    /// The copies JetStream keeps of each topic: `--replicas`, or [`DEFAULT_REPLICAS`].
    pub fn replicas(&self) -> u8 {
        self.replicas.unwrap_or(DEFAULT_REPLICAS)
    }

    /// A sentence for each option given that does nothing with the others given, to warn of at
    /// start, so that nobody trusts a setting that is not in force.
    pub fn options_without_effect(&self) -> Vec<&'static str> {
        let mut ignored = Vec::new();
        if self.fsync.is_some() && self.data_dir.is_none() {
            ignored.push(
                "--fsync does nothing without --data-dir: only the jobs kept in a data directory are synced",
            );
        }
        if self.replicas.is_some() && self.store.is_none() {
            ignored.push(
                "--replicas does nothing without --store: only a NATS JetStream cluster keeps copies of the topics",
            );
        }
        ignored
    }

    /// The broker's limits, without TLS (see [`ServeArgs::tls_files`]).
    pub fn settings(&self) -> Settings {
        Settings {
            call_timeout: self.call_timeout.into(),
            connect_timeout: self.connect_timeout.into(),
            admission: Admission {
                token: self.token.clone().unwrap_or_default(),
                max_connections: self.max_connections as usize,
                max_connections_per_ip: self.max_connections_per_ip as usize,
                max_handshaking_per_ip: self.max_handshaking_per_ip as usize,
                max_requests_per_connection: self.max_requests_per_connection as usize,
                ..Admission::default()
            },
            factory_tls: None,
            max_topics: self.max_topics as usize,
            max_deliveries: std::num::NonZeroU32::new(self.max_deliveries),
        }
    }
}

#[cfg(test)]
mod tests;
