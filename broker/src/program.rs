//! What the `broker` program does with its command line: serve, or ask a running broker
//! (`stats`, `dead-letters`), or write TLS files (`tls-init`). `main.rs` only parses the
//! command line, starts logging and the runtime, and turns the result into an exit code.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::Path;

use lab_console::Console;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use transport::tls::{InitError, TlsError};

use crate::cli::{BrokerArgs, DeadLetterArgs, ServeArgs, StatsArgs};
use crate::outcome::{count_results, print_results};
use crate::run::Config;
use crate::stats::StatsError;
use crate::store::{StoreConfig, StoreError};

/// Why a command of the program failed, as it is said on standard error after its name.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// A TLS file cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The broker's port is taken.
    #[error("cannot listen on {address} ({kind}): is another broker running? Stop it, or choose another --port")]
    PortTaken {
        /// The address asked for.
        address: SocketAddr,
        /// Why it cannot be bound.
        kind: ErrorKind,
    },
    /// The dashboard's port is taken.
    #[error("cannot listen for HTTP on {address} ({kind}): is another broker running? Choose another --http, or --http off")]
    HttpPortTaken {
        /// The address asked for.
        address: SocketAddr,
        /// Why it cannot be bound.
        kind: ErrorKind,
    },
    /// `--store` was given to a broker built without JetStream.
    #[error("this broker was built without the JetStream store (the `jetstream` feature, on by default); build it with `cargo build -p broker` to use --store")]
    NoJetStream,
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The running broker could not be asked.
    #[error(transparent)]
    Stats(#[from] StatsError),
    /// `tls-init` could not write its files.
    #[error(transparent)]
    TlsInit(#[from] InitError),
}

/// Serves as the command line says until interrupted.
pub async fn serve(args: ServeArgs) -> Result<(), ProgramError> {
    for warning in args.options_without_effect() {
        tracing::warn!("{warning}");
    }
    let tls = args.tls_files();
    let mut settings = args.settings();
    settings.admission.tls = tls.server()?;
    settings.factory_tls = tls.client()?;
    let store = store_config(&args)?;
    // Bound before the store is opened, so that a port already taken is reported at once.
    let (listener, http) = bind(&args).await?;
    let shutdown = CancellationToken::new();
    lab_console::cancel_on_signal(shutdown.clone());
    let observer = if args.quiet {
        count_results()
    } else {
        print_results(Console::plain())
    };
    let config = Config {
        settings,
        store,
        observer,
        watcher: None,
    };
    Ok(crate::run(config, listener, http, shutdown).await?)
}

/// The store that `--data-dir` or `--store` name, memory without either.
fn store_config(args: &ServeArgs) -> Result<StoreConfig, ProgramError> {
    let dead_letter_limit = args.dead_letter_limit as usize;
    if let Some(servers) = &args.store {
        #[cfg(not(feature = "jetstream"))]
        {
            let _ = servers;
            return Err(ProgramError::NoJetStream);
        }
        #[cfg(feature = "jetstream")]
        return Ok(StoreConfig::JetStream(crate::queue::JetStreamConfig {
            servers: servers.0.clone(),
            replicas: usize::from(args.replicas()),
            ack_wait: args.call_timeout.into(),
            dead_letter_limit,
        }));
    }
    Ok(match &args.data_dir {
        Some(dir) => StoreConfig::Disk {
            dir: dir.clone(),
            fsync: args.fsync(),
            dead_letter_limit,
        },
        None => StoreConfig::Memory { dead_letter_limit },
    })
}

/// Binds the broker's port and its dashboard's unless `--http off`.
async fn bind(args: &ServeArgs) -> Result<(TcpListener, Option<TcpListener>), ProgramError> {
    let address = args.listen_address();
    let listener = TcpListener::bind(address)
        .await
        .map_err(|error| ProgramError::PortTaken {
            address,
            kind: error.kind(),
        })?;
    let http =
        match args.http.0 {
            Some(address) => Some(TcpListener::bind(address).await.map_err(|error| {
                ProgramError::HttpPortTaken {
                    address,
                    kind: error.kind(),
                }
            })?),
            None => None,
        };
    Ok((listener, http))
}

/// `broker stats`: a running broker's figures on standard output.
pub async fn stats(args: StatsArgs) -> Result<(), ProgramError> {
    let (tls, token) = client_of(&args.target)?;
    let address = &args.target.broker;
    crate::stats::show(address, &token, tls.as_ref(), args.json, args.watch).await?;
    Ok(())
}

/// `broker dead-letters`: a running broker's dead letters on standard output.
pub async fn dead_letters(args: DeadLetterArgs) -> Result<(), ProgramError> {
    let (tls, token) = client_of(&args.target)?;
    let (address, topic) = (&args.target.broker, args.topic.as_deref());
    crate::stats::show_dead_letters(address, &token, tls.as_ref(), topic, args.json).await?;
    Ok(())
}

/// The TLS and the token to ask a running broker with.
fn client_of(
    target: &BrokerArgs,
) -> Result<(Option<transport::ClientTls>, transport::AccessToken), ProgramError> {
    let tls = target.tls_files().client()?;
    Ok((tls, target.token.clone().unwrap_or_default()))
}

/// `broker tls-init DIR`: writes the files, then says how to use them.
pub fn tls_init(dir: &Path) -> Result<(), ProgramError> {
    transport::tls::write_development_files(dir)?;
    let dir = dir.display();
    println!(
        "wrote a development CA ({dir}/ca.pem) and a certificate for 127.0.0.1, ::1 and \
         localhost ({dir}/cert.pem, its key {dir}/key.pem readable by you only)."
    );
    println!("Turn TLS on: the broker, then every other program, with --tls-dir {dir}:");
    println!("  cargo run -p broker -- --tls-dir {dir}");
    println!("  cargo run -p factory -- --tls-dir {dir}     # and miner, lab, broker stats");
    Ok(())
}
