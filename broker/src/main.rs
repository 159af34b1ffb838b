use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use broker::cli::{Cli, Command, ServeArgs};
use broker::queue::{DiskStore, JobStore, MemoryStore};
use broker::{count_results, print_results, Broker};
use lab_console::Console;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use transport::starting::{self, refuse_while};

fn main() -> ExitCode {
    let cli: Cli = lab_console::usage::parse(&[]);
    lab_console::init_logging(cli.log_format);
    let threads = match cli.command {
        Some(Command::Stats(_) | Command::DeadLetters(_) | Command::TlsInit(_)) => 1,
        None => cli.serve.threads,
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.into())
            .enable_all()
            .build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => {
            eprintln!("broker: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Some(Command::Stats(stats)) => {
            let Some(tls) = client_tls("broker stats", &stats.target) else {
                return ExitCode::FAILURE;
            };
            let token = stats.target.token.unwrap_or_default();
            let shown = broker::stats::show(
                &stats.target.broker,
                &token,
                tls.as_ref(),
                stats.json,
                stats.watch,
            )
            .await;
            report("broker stats", shown)
        }
        Some(Command::DeadLetters(args)) => {
            let Some(tls) = client_tls("broker dead-letters", &args.target) else {
                return ExitCode::FAILURE;
            };
            let token = args.target.token.unwrap_or_default();
            let topic = args.topic.as_deref();
            let shown = broker::stats::show_dead_letters(
                &args.target.broker,
                &token,
                tls.as_ref(),
                topic,
                args.json,
            )
            .await;
            report("broker dead-letters", shown)
        }
        Some(Command::TlsInit(args)) => tls_init(&args.dir),
        None => serve(cli.serve).await,
    }
}

/// The TLS of a command that asks a running broker; `None` after saying why its files cannot
/// be used.
fn client_tls(
    command: &str,
    target: &broker::cli::BrokerArgs,
) -> Option<Option<transport::ClientTls>> {
    match target.tls_files().client() {
        Ok(tls) => Some(tls),
        Err(error) => {
            eprintln!("{command}: {error}");
            None
        }
    }
}

/// `broker tls-init DIR`: writes the files, then says how to use them.
fn tls_init(dir: &std::path::Path) -> ExitCode {
    match transport::tls::write_development_files(dir) {
        Ok(_) => {
            let dir = dir.display();
            println!(
                "wrote a development CA ({dir}/ca.pem) and a certificate for 127.0.0.1, ::1 and \
                 localhost ({dir}/cert.pem, its key {dir}/key.pem readable by you only)."
            );
            println!("Turn TLS on: the broker, then every other program, with --tls-dir {dir}:");
            println!("  cargo run -p broker -- --tls-dir {dir}");
            println!(
                "  cargo run -p factory -- --tls-dir {dir}     # and miner, lab, broker stats"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("broker tls-init: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The exit code of a command that asks a running broker, its error on standard error.
fn report(command: &str, result: Result<(), broker::stats::StatsError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{command}: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    for warning in args.options_without_effect() {
        tracing::warn!("{warning}");
    }
    let tls = args.tls_files();
    let (server_tls, factory_tls) = match (tls.server(), tls.client()) {
        (Ok(server), Ok(client)) => (server, client),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("broker: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut settings = args.settings();
    settings.admission.tls = server_tls;
    settings.factory_tls = factory_tls;
    // Bound before the store is opened, so that a port already taken is reported at once.
    let Some(listeners) = bind(&args).await else {
        return ExitCode::FAILURE;
    };
    let shutdown = CancellationToken::new();
    lab_console::cancel_on_signal(shutdown.clone());
    let dead_letter_limit = args.dead_letter_limit as usize;
    if let Some(servers) = args.store.clone() {
        #[cfg(not(feature = "jetstream"))]
        {
            let _ = servers;
            eprintln!("broker: this broker was built without the JetStream store (the `jetstream` feature, on by default); build it with `cargo build -p broker` to use --store");
            return ExitCode::FAILURE;
        }
        #[cfg(feature = "jetstream")]
        {
            let config = broker::queue::JetStreamConfig {
                servers: servers.0,
                replicas: usize::from(args.replicas()),
                ack_wait: args.call_timeout.into(),
                dead_letter_limit,
            };
            tracing::info!(
                "until NATS JetStream is ready, clients at {} are told that the broker is starting",
                args.listen_address()
            );
            let opening = broker::queue::JetStreamStore::connect(config);
            return match open_refusing(
                &listeners,
                settings.admission.tls.clone(),
                &shutdown,
                opening,
            )
            .await
            {
                None => ExitCode::SUCCESS,
                Some(Ok(store)) => {
                    tracing::info!("topics are kept in NATS JetStream");
                    serve_with(store, args, settings, listeners, shutdown).await
                }
                Some(Err(error)) => {
                    eprintln!("broker: {error}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    match args.data_dir.clone() {
        None => {
            let store = MemoryStore::with_dead_letter_limit(dead_letter_limit);
            serve_with(store, args, settings, listeners, shutdown).await
        }
        Some(dir) => {
            let opening = DiskStore::open(&dir, args.fsync(), dead_letter_limit);
            match open_refusing(
                &listeners,
                settings.admission.tls.clone(),
                &shutdown,
                opening,
            )
            .await
            {
                None => ExitCode::SUCCESS,
                Some(Ok(store)) => {
                    tracing::info!("jobs are kept on disk in {}", dir.display());
                    serve_with(store, args, settings, listeners, shutdown).await
                }
                Some(Err(error)) => {
                    eprintln!("broker: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Where the broker serves: its port, and its dashboard's unless `--http off`.
struct Listeners {
    rpc: TcpListener,
    http: Option<TcpListener>,
}

/// Binds the broker's port and its dashboard's; `None`, the reason said on standard error, if
/// either is taken.
async fn bind(args: &ServeArgs) -> Option<Listeners> {
    let address = args.listen_address();
    let rpc = match TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "broker: cannot listen on {address} ({}): is another broker running? Stop it, or choose another --port",
                error.kind()
            );
            return None;
        }
    };
    let http = match args.http.0 {
        Some(http) => match TcpListener::bind(http).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                eprintln!(
                    "broker: cannot listen for HTTP on {http} ({}): is another broker running? Choose another --http, or --http off",
                    error.kind()
                );
                return None;
            }
        },
        None => None,
    };
    Some(Listeners { rpc, http })
}

/// Runs `opening` (a store being opened) while every connection to the broker's listeners is
/// told at once that the broker is not ready yet (inside TLS, with `tls`); `None` if the broker
/// is stopped first.
async fn open_refusing<T>(
    listeners: &Listeners,
    tls: Option<transport::ServerTls>,
    shutdown: &CancellationToken,
    opening: impl Future<Output = T>,
) -> Option<T> {
    let opening = async {
        tokio::select! {
            opened = opening => Some(opened),
            _ = shutdown.cancelled() => None,
        }
    };
    let opening = refuse_while(&listeners.rpc, starting::not_ready(tls), opening);
    match &listeners.http {
        Some(http) => refuse_while(http, Arc::new(http_not_ready), opening).await,
        None => opening.await,
    }
}

/// Answers an HTTP request (a dashboard, a Prometheus scrape, a health check) while the broker
/// starts: 503, with when to ask again, rather than a wait with no answer.
fn http_not_ready(mut stream: TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    /// The most of a request read before the answer: its head, which is all a GET has.
    const MOST_READ: usize = 16 * 1024;
    const BODY: &str = "the broker is starting and not ready yet\n";
    Box::pin(async move {
        // Read the request first: a connection closed with bytes unread is reset, and the
        // client could lose the answer.
        let mut request = Vec::new();
        let mut buffer = [0; 4096];
        while !request.windows(4).any(|end| end == b"\r\n\r\n") && request.len() < MOST_READ {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => request.extend_from_slice(&buffer[..read]),
            }
        }
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Retry-After: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
}

async fn serve_with<S: JobStore>(
    store: S,
    args: ServeArgs,
    settings: broker::Settings,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> ExitCode {
    let address = args.listen_address();
    let observer = if args.quiet {
        count_results()
    } else {
        print_results(Console::plain())
    };
    let tls = settings.admission.tls.is_some();
    let broker = Broker::new(store, settings, observer, shutdown.clone());
    if tls {
        tracing::info!("listening on {address} in TLS");
    } else {
        tracing::info!("listening on {address}");
    }
    if let Some(listener) = listeners.http {
        if let Ok(http) = listener.local_addr() {
            tracing::info!(
                "dashboard on http://{http}/ (metrics: /metrics, JSON: /api/stats, /api/dead-letters)"
            );
        }
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(error) = broker::http::serve(broker, listener, shutdown).await {
                tracing::error!("the dashboard and /metrics stopped: {error}");
            }
        });
    }
    broker::serve(broker, listeners.rpc, shutdown).await;
    ExitCode::SUCCESS
}
