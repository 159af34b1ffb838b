//! NATS servers of a test's or a benchmark's own: `nats-server` (2.10 or newer on PATH;
//! `bash tests/run` installs 2.15.1) with JetStream, on free loopback ports, its store in a temporary
//! folder. Alone, or three in a cluster whose routes are on loopback too. A node can be
//! SIGKILLed and started again on the same ports and store, as a machine that crashed and came
//! back.
//!
//! Blocking calls, std only, so that the broker's unit tests, the system tests and the
//! benchmark runner can all use it. For the same readers, [`go`] runs the Go toolchain on the
//! Go lab's programs, the other outside programs they start.

pub mod go;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a server may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// `count` distinct free loopback ports (all held until all are found).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("a bound port").port())
        .collect()
}

/// One `nats-server -js`; killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    args: Vec<String>,
    store: tempfile::TempDir,
    monitor: SocketAddr,
    clustered: bool,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
}

impl NatsServer {
    /// Starts a server of its own and waits until its JetStream is ready.
    pub fn start() -> Self {
        /// Tries on new ports when the ones chosen were taken before the server could bind
        /// them: a port is free when chosen, but another test's server or any outgoing
        /// connection may take it before this one starts.
        const PORT_TRIES: usize = 5;
        for _ in 1..PORT_TRIES {
            let ports = free_ports(2);
            let mut node = Self::spawned([ports[0], ports[1]], Vec::new());
            if node.ready_or_exited() {
                return node;
            }
        }
        let ports = free_ports(2);
        let node = Self::spawned([ports[0], ports[1]], Vec::new());
        node.wait_ready();
        node
    }

    /// Starts a server on `[client port, monitoring port]` with `extra` arguments; does not
    /// wait.
    fn spawned([port, monitor]: [u16; 2], extra: Vec<String>) -> Self {
        let store = tempfile::tempdir().expect("a temporary folder");
        let mut args: Vec<String> = ["-js", "-a", "127.0.0.1", "-p", &port.to_string()]
            .map(String::from)
            .to_vec();
        args.extend(["-m".into(), monitor.to_string(), "-sd".into()]);
        args.push(store.path().display().to_string());
        args.extend(["-l".into(), store.path().join("log").display().to_string()]);
        let clustered = extra.iter().any(|arg| arg == "--cluster");
        args.extend(extra);
        let mut node = Self {
            child: None,
            args,
            store,
            monitor: ([127, 0, 0, 1], monitor).into(),
            clustered,
            url: format!("nats://127.0.0.1:{port}"),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        require_trusted_version();
        let child = Command::new("nats-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is on PATH (bash tests/run installs 2.15.1)");
        self.child = Some(child);
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed server again, on its ports and store, and waits until it is ready.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a server that was killed");
        self.spawn();
        self.wait_ready();
    }

    /// Waits until the server answers and its JetStream is up (in a cluster: with a leader).
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if self.is_ready() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} was not ready within {READY_WITHIN:?}",
                self.url
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether this server, and not another on a port it meant to take, answers with JetStream
    /// up (in a cluster: with a leader).
    fn is_ready(&self) -> bool {
        let port = self.url.rsplit(':').next().unwrap_or_default();
        let ours = http_get(self.monitor, "/varz")
            .is_ok_and(|varz| varz.contains(&format!("\"port\": {port},")));
        // nats-server opens its monitoring port and JetStream before it accepts clients.
        let accepts = port.parse::<u16>().is_ok_and(|port| {
            TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(1),
            )
            .is_ok()
        });
        ours && accepts
            && http_get(self.monitor, "/jsz").is_ok_and(|jsz| {
                jsz.contains("\"config\"") && (!self.clustered || jsz.contains("\"leader\""))
            })
    }

    /// Waits until the server is ready (true) or has exited, having found a port taken
    /// (false, and the server is gone).
    fn ready_or_exited(&mut self) -> bool {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.is_ready() {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|child| child.try_wait().ok().flatten().is_some());
            if exited {
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "nats-server {} was not ready within {READY_WITHIN:?}",
            self.url
        )
    }

    /// What the server's JetStream reports of its streams and consumers, and the warnings and
    /// errors it logged: for a failing test to show.
    pub fn report(&self) -> String {
        let jsz = http_get(self.monitor, "/jsz?consumers=true&config=false")
            .unwrap_or_else(|error| error);
        let log = std::fs::read_to_string(self.store.path().join("log")).unwrap_or_default();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("[WRN]") || line.contains("[ERR]"))
            .collect();
        format!(
            "{}: {jsz}\nits warnings:\n{}\n",
            self.url,
            warnings.join("\n")
        )
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three NATS servers in one JetStream cluster, routes on loopback.
pub struct NatsCluster {
    /// The nodes, in order.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three nodes and waits until each sees the cluster's meta leader.
    pub fn start() -> Self {
        let ports = free_ports(9);
        let routes = &ports[6..];
        let route_list = routes
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes: Vec<NatsServer> = routes
            .iter()
            .enumerate()
            .map(|(index, port)| {
                let extra = vec![
                    "--server_name".into(),
                    format!("n{}", index + 1),
                    "--cluster_name".into(),
                    "pairbroker".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{port}"),
                    "--routes".into(),
                    route_list.clone(),
                ];
                NatsServer::spawned([ports[2 * index], ports[2 * index + 1]], extra)
            })
            .collect();
        for node in &nodes {
            node.wait_ready();
        }
        Self { nodes }
    }

    /// Every node's URL, comma-separated, as `broker --store` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every node's [`NatsServer::report`].
    pub fn report(&self) -> String {
        self.nodes.iter().map(NatsServer::report).collect()
    }
}

/// The body of a plain HTTP/1.1 GET of a monitoring page, or what went wrong.
fn http_get(address: SocketAddr, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))
        .map_err(|error| error.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|error| error.to_string())?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|error| error.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|error| error.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP: {response:?}"))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(head.to_owned());
    }
    Ok(body.to_owned())
}

/// Fails unless `nats-server` on PATH is 2.10 or newer: Debian bookworm's 2.9.10 acknowledges
/// jobs it does not store when a replicated stream is full (the fault test shows it), so a test
/// against it would fail for the server's fault, not ours.
fn require_trusted_version() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let output = Command::new("nats-server")
            .arg("--version")
            .output()
            .expect("nats-server is on PATH (bash tests/run installs 2.15.1 from PyPI)");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            version_is_trusted(&text),
            "{} is too old: 2.9 loses acknowledged jobs in replicated streams; put 2.10 or \
             newer on PATH (bash tests/run installs 2.15.1 from PyPI)",
            text.trim()
        );
    });
}

/// Whether `nats-server --version`'s answer (`nats-server: v2.15.1`) is 2.10 or newer.
fn version_is_trusted(text: &str) -> bool {
    let version = text.trim().rsplit('v').next().unwrap_or_default();
    let mut parts = version.split('.').map(|part| part.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (2, 10),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_two_ten_and_newer_are_trusted() {
        assert!(version_is_trusted("nats-server: v2.15.1\n"));
        assert!(version_is_trusted("nats-server: v2.10.0"));
        assert!(!version_is_trusted("nats-server: v2.9.10"));
        assert!(!version_is_trusted("garbage"));
    }

    #[test]
    fn a_cluster_node_comes_back_after_a_kill() {
        let mut cluster = NatsCluster::start();
        assert_eq!(cluster.urls().matches("nats://127.0.0.1:").count(), 3);
        cluster.nodes[1].kill();
        assert!(TcpStream::connect(cluster.nodes[1].url.trim_start_matches("nats://")).is_err());
        cluster.nodes[1].restart();
        assert!(TcpStream::connect(cluster.nodes[1].url.trim_start_matches("nats://")).is_ok());
        assert!(cluster.report().contains("meta_cluster"));
    }
}
