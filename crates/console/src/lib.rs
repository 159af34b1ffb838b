//! The terminal side of the lab programs.
//!
//! - [`Console`]: one line per completed job, operation or published job, on standard output,
//!   so that results and logs (standard error, [`init_logging`]) stay apart; logs read as
//!   sentences, with durations [`Rounded`].
//! - [`cancel_on_signal`]: Ctrl-C or SIGTERM starts a graceful stop.
//! - [`usage`]: what a person types, and the usage errors (status 2) that say what to type
//!   instead; [`BrokerArgs`], the options every client of the broker shares; [`DialTls`] and
//!   [`ServeTls`], the TLS options of every program.
//! - [`how_to_start`]: the command that starts another lab program, for the hints in errors.
//!
//! A [`Console`] may carry a prefix naming its component, so that the one-process lab
//! (`cargo run -p lab`) can interleave the broker's, the factories' and the miner's lines and
//! still show who said what.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

mod logs;
pub mod usage;

pub use logs::{
    component, init_logging, init_logging_with, LineStart, LogFormat, DEFAULT_LOG_FILTER,
};
pub use transport::words::Rounded;

/// Cancels `shutdown` on Ctrl-C (SIGINT) or SIGTERM, so that a program stops gracefully
/// whether a person or a process manager stops it.
pub fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut terminate) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = terminate.recv() => {}
                    }
                }
                Err(error) => {
                    tracing::warn!("cannot listen for SIGTERM ({error}); Ctrl-C still stops");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stop requested");
        shutdown.cancel();
    });
}

/// A line printer for one component.
#[derive(Clone, Debug, Default)]
pub struct Console {
    prefix: Option<Arc<str>>,
    quiet: bool,
}

impl Console {
    /// Prints lines as they are.
    pub fn plain() -> Self {
        Self::default()
    }

    /// Prints each line after `prefix` and a bar, e.g. `broker    | ...`.
    pub fn prefixed(prefix: &str) -> Self {
        Self {
            prefix: Some(Arc::from(format!("{prefix:<9}| "))),
            quiet: false,
        }
    }

    /// The name of the component it prints for, if it has one.
    pub fn name(&self) -> Option<&str> {
        let prefix = self.prefix.as_deref()?;
        Some(prefix.trim_end_matches("| ").trim_end())
    }

    /// Prints nothing: for tests and for load, where a line per job is noise.
    pub fn quiet() -> Self {
        Self {
            prefix: None,
            quiet: true,
        }
    }

    /// Prints one line. A closed or failing stdout is ignored rather than fatal: losing a
    /// result line must never stop a component from serving.
    pub fn line(&self, line: fmt::Arguments<'_>) {
        if self.quiet {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = match &self.prefix {
            Some(prefix) => writeln!(out, "{prefix}{line}"),
            None => writeln!(out, "{line}"),
        };
    }
}

/// The address of the lab's broker.
pub const DEFAULT_BROKER: &str = "127.0.0.1:8030";

/// How a miner or a factory reaches its broker: the same options on both.
#[derive(Clone, Debug, clap::Args)]
pub struct BrokerArgs {
    /// The broker's address, or several separated by commas.
    ///
    /// The first that answers is used, and when it goes away the next in the list, round and
    /// round.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_BROKER, value_name = "HOST:PORT[,...]", value_parser = usage::broker_address, help_heading = "Broker")]
    pub broker: Vec<String>,
    /// How long to wait for a connection to the broker.
    ///
    /// A duration with its unit (e.g. `3s`, `500ms`), from 1ms to 1h.
    #[arg(long, default_value_t = transport::DEFAULT_CONNECT_TIMEOUT.into(), value_name = "DURATION", allow_negative_numbers = true, value_parser = usage::duration_from_to("the connect timeout", MIN_CONNECT_TIMEOUT, MAX_CONNECT_TIMEOUT), help_heading = "Broker")]
    pub connect_timeout: humantime::Duration,
    /// How long to keep reconnecting to a broker that went away.
    ///
    /// Also how long a request that failed for now (the broker's store failing, no answer in
    /// time) is made again. After it, the program exits with an error. A duration with its unit
    /// (e.g. `30s`, `2m`).
    #[arg(long, default_value_t = transport::link::DEFAULT_GIVE_UP_AFTER.into(), value_name = "DURATION", allow_negative_numbers = true, value_parser = usage::duration, help_heading = "Broker")]
    pub give_up_after: humantime::Duration,
    /// How long to keep trying at start while no broker is up or ready.
    ///
    /// For programs started together with their broker, in any order: a broker not listening
    /// yet, or still opening its store, is tried again until this has passed. A wrong token or
    /// a host name that does not resolve still fails at once. A duration with its unit (e.g.
    /// `30s`), or `0`: a broker not there at start is an error at once.
    #[arg(long, default_value = "0", value_name = "DURATION", allow_negative_numbers = true, value_parser = usage::duration, help_heading = "Broker")]
    pub wait_for_broker: humantime::Duration,
    /// The broker's shared secret.
    ///
    /// The --token the broker was started with. A factory also requires it of the broker's
    /// calls.
    #[arg(
        long,
        value_name = "SECRET",
        env = "PAIRBROKER_TOKEN",
        hide_env_values = true,
        help_heading = "Broker"
    )]
    pub token: Option<transport::AccessToken>,
    /// TLS to dial the broker with.
    #[command(flatten)]
    pub tls: DialTls,
}

/// TLS to dial with: the options of every program that dials the broker or a factory.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DialTls {
    /// Dial over TLS, trusting the CA certificate in FILE.
    ///
    /// PEM. The certificate of the program dialled must be signed by it and name the address
    /// dialled (an IP address or a name): the host in --broker, or for a broker the address
    /// each factory subscribed with; Go factories are still dialled in plain TCP. Without it
    /// or --tls-dir, connections are plain TCP.
    #[arg(long, value_name = "FILE", help_heading = "Security")]
    pub tls_ca: Option<PathBuf>,
    /// TLS with the files of `broker tls-init DIR`.
    ///
    /// DIR/ca.pem as --tls-ca; a program that also serves (the broker, a factory) serves with
    /// DIR/cert.pem and DIR/key.pem, as --tls-cert and --tls-key.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "tls_ca",
        help_heading = "Security"
    )]
    pub tls_dir: Option<PathBuf>,
}

impl DialTls {
    /// The files these options name: with --tls-dir, a server's certificate and key too.
    pub fn files(&self) -> transport::TlsFiles {
        self.files_with(&ServeTls::default())
    }

    /// The files these options and `served` name together.
    pub fn files_with(&self, served: &ServeTls) -> transport::TlsFiles {
        transport::TlsFiles::from_options(
            self.tls_dir.as_deref(),
            self.tls_ca.as_deref(),
            served.tls_cert.as_deref(),
            served.tls_key.as_deref(),
        )
    }
}

/// A certificate to serve with, for the programs that are dialled too: the broker, and a
/// factory, which the broker calls.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeTls {
    /// Serve over TLS with the certificate in FILE (PEM, its chain after it); with --tls-key.
    ///
    /// It must name the address its clients dial (a factory's --ip, where the broker calls
    /// it). Every client must then dial in TLS, with --tls-ca or --tls-dir, the access token
    /// travelling inside it; Go's net/rpc clients, which cannot, are not served.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_dir",
        help_heading = "Security"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        conflicts_with = "tls_dir",
        help_heading = "Security"
    )]
    pub tls_key: Option<PathBuf>,
}

/// The shortest connect timeout: with zero, every connection would fail.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_millis(1);
/// The longest connect timeout: a broker that has not answered within an hour is not there, so
/// a longer one is a slip of the keyboard.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3_600);

impl BrokerArgs {
    /// The link settings these options give: an error when the TLS files cannot be used.
    pub fn link(&self) -> Result<transport::LinkConfig, transport::TlsError> {
        Ok(transport::LinkConfig {
            brokers: self.broker.clone(),
            connect_timeout: self.connect_timeout.into(),
            give_up_after: self.give_up_after.into(),
            wait_for_broker: self.wait_for_broker.into(),
            token: self.token.clone().unwrap_or_default(),
            tls: self.tls.files().client()?,
        })
    }
}

/// How to start the lab program `program` (e.g. `broker`), for a hint in an error: its path
/// as this program was run (`./target/debug/broker` when this is `./target/debug/miner`), if
/// it is there, and `cargo run -p broker`.
pub fn how_to_start(program: &str) -> String {
    let cargo = format!("cargo run -p {program}");
    let Some(this) = std::env::args_os().next() else {
        return cargo;
    };
    let this = Path::new(&this);
    let sibling = this.with_file_name(format!("{program}{}", std::env::consts::EXE_SUFFIX));
    let on_path = || {
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path)
                .any(|dir| dir.join(sibling.file_name().unwrap_or_default()).is_file())
        })
    };
    match this.parent() {
        // Run by its name alone, so found on the PATH: the other program may be there too.
        Some(dir) if dir.as_os_str().is_empty() && on_path() => format!("{program} or {cargo}"),
        Some(dir) if !dir.as_os_str().is_empty() && sibling.is_file() => {
            format!("{} or {cargo}", sibling.display())
        }
        _ => cargo,
    }
}

/// Why a client program could not reach its broker, and what to do about it: a name that does
/// not resolve is a typing mistake to check, a refused token a token to give, anything else
/// most often a broker not started.
pub fn unreachable_broker(error: &transport::ConnectError) -> String {
    let said = format!(
        "cannot reach broker at {} ({})",
        error.address(),
        error.cause()
    );
    match error {
        transport::ConnectError::Resolve { .. } => {
            format!("{said}: check the host name, or give the broker's address with --broker")
        }
        // The refusal says what to give.
        transport::ConnectError::Handshake {
            source: transport::HandshakeError::WrongToken | transport::HandshakeError::TlsRequired,
            ..
        }
        | transport::ConnectError::NoTls { .. }
        | transport::ConnectError::Certificate { .. } => said,
        transport::ConnectError::Handshake {
            source: transport::HandshakeError::NotReady,
            ..
        } => format!(
            "{said}: it serves once its store is ready; try again then (a miner or a factory \
             waits for it with --wait-for-broker)"
        ),
        _ => format!(
            "{said}: start the broker ({}), or give its address with --broker",
            how_to_start("broker")
        ),
    }
}
