//! An attacker on the same host as the programs: connections to the broker that hold its
//! resources and do no work. Some send nothing, some half a handshake, which the broker must
//! close on its handshake deadline; some finish the handshake and never send a request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the attacker waits before opening a connection the broker closed again, so that a
/// refused connection does not spin a core.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);

/// Connections from this host that hold the broker's resources and do no work.
pub struct Attacker {
    reopened: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What one of the attacker's connections sends before it goes quiet.
#[derive(Clone, Copy)]
enum Hold {
    /// Nothing at all.
    Silent,
    /// The first half of the handshake's magic.
    HalfOpen,
    /// The whole handshake, answered; then never a request.
    Idle,
}

impl Attacker {
    /// Starts holding `[silent, half_open, idle]` connections of each kind to `broker`, each
    /// opened again whenever the broker closes it.
    pub fn start(broker: SocketAddr, [silent, half_open, idle]: [u32; 3]) -> Self {
        let reopened = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (hold, count) in [
            (Hold::Silent, silent),
            (Hold::HalfOpen, half_open),
            (Hold::Idle, idle),
        ] {
            for _ in 0..count {
                let reopened = reopened.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        hold_one(broker, hold).await;
                        reopened.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(REOPEN_PAUSE).await;
                    }
                }));
            }
        }
        Self { reopened, tasks }
    }

    /// How many times the broker closed (or refused) one of the attacker's connections.
    pub fn reopened(&self) -> u64 {
        self.reopened.load(Ordering::Relaxed)
    }

    /// Closes every connection.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Opens one connection, sends what `hold` says and waits until the broker closes it.
async fn hold_one(broker: SocketAddr, hold: Hold) {
    let Ok(mut stream) = TcpStream::connect(broker).await else {
        return;
    };
    let magic = transport::handshake::MAGIC;
    let sent = match hold {
        Hold::Silent => Ok(()),
        Hold::HalfOpen => stream.write_all(&magic[..magic.len() / 2]).await,
        Hold::Idle => {
            let mut hello = magic.to_vec();
            hello.extend_from_slice(&0u16.to_be_bytes());
            stream.write_all(&hello).await
        }
    };
    if sent.is_err() {
        return;
    }
    // Reads until the broker closes the connection; the one byte of an answered handshake
    // is read and dropped on the way.
    let mut buffer = [0; 64];
    while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {}
}
