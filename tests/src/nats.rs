//! NATS servers of a test's own: Debian's `nats-server` (`.ci/run` installs it), on free
//! loopback ports, with JetStream and its store in a temporary folder. Alone, or three in a
//! cluster whose routes are on loopback too. A node can be SIGKILLed and started again on the
//! same ports and store, as a machine that crashed and came back.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::{free_ports, try_http_get, WAIT};

/// One `nats-server -js`; killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    args: Vec<String>,
    store: tempfile::TempDir,
    monitor: SocketAddr,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
}

impl NatsServer {
    /// Starts a server of its own and waits until JetStream is ready.
    pub async fn start() -> Self {
        let ports = free_ports(2);
        let node = Self::with_args([ports[0], ports[1]], Vec::new());
        node.wait_ready().await;
        node
    }

    /// Starts a server on `[client port, monitoring port]` with `extra` arguments; does not
    /// wait.
    fn with_args([port, monitor]: [u16; 2], extra: Vec<String>) -> Self {
        let monitor: SocketAddr = ([127, 0, 0, 1], monitor).into();
        let store = tempfile::tempdir().expect("a temporary folder");
        let mut args: Vec<String> = ["-js", "-a", "127.0.0.1", "-p", &port.to_string()]
            .map(String::from)
            .to_vec();
        args.extend(["-m".into(), monitor.port().to_string(), "-sd".into()]);
        args.push(store.path().display().to_string());
        args.extend(["-l".into(), store.path().join("log").display().to_string()]);
        args.extend(extra);
        let mut node = Self {
            child: None,
            args,
            store,
            monitor,
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
            .expect("nats-server is on PATH (.ci/run installs 2.15.1)");
        self.child = Some(child);
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill nats-server");
            child.wait().expect("reap nats-server");
        }
    }

    /// Starts the killed server again, on its ports and store, and waits until it is ready.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a server that was killed");
        self.spawn();
        self.wait_ready().await;
    }

    /// Waits until the server answers and its JetStream has a leader (its own, alone).
    async fn wait_ready(&self) {
        let ready = lab::wait_until(WAIT, async || {
            try_http_get(self.monitor, "/jsz")
                .await
                .is_ok_and(|jsz| jsz.contains("\"config\"") && self.leader_known(&jsz))
        })
        .await;
        assert!(
            ready,
            "nats-server {} was not ready within {WAIT:?}",
            self.url
        );
    }

    fn leader_known(&self, jsz: &str) -> bool {
        // Alone, a server has no meta cluster; in a cluster, the meta group must have a leader.
        !self.args.iter().any(|arg| arg == "--cluster") || jsz.contains("\"leader\"")
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
    /// Starts three nodes and waits until the cluster has a meta leader seen by all.
    pub async fn start() -> Self {
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
                NatsServer::with_args(
                    [ports[2 * index], ports[2 * index + 1]],
                    vec![
                        "--server_name".into(),
                        format!("n{}", index + 1),
                        "--cluster_name".into(),
                        "pairbroker-test".into(),
                        "--cluster".into(),
                        format!("nats://127.0.0.1:{port}"),
                        "--routes".into(),
                        route_list.clone(),
                    ],
                )
            })
            .collect();
        for node in &nodes {
            node.wait_ready().await;
        }
        Self { nodes }
    }

    /// What each node's JetStream reports of its streams and consumers (`/jsz`), for a
    /// failing test to show.
    pub async fn report(&self) -> String {
        let mut report = String::new();
        for node in &self.nodes {
            let jsz = try_http_get(node.monitor, "/jsz?consumers=true&config=false")
                .await
                .unwrap_or_else(|error| error);
            let log = std::fs::read_to_string(node.store.path().join("log")).unwrap_or_default();
            let warnings: Vec<&str> = log
                .lines()
                .filter(|line| line.contains("[WRN]") || line.contains("[ERR]"))
                .collect();
            report.push_str(&format!(
                "{}: {jsz}\nits warnings:\n{}\n",
                node.url,
                warnings.join("\n")
            ));
        }
        report
    }

    /// Every node's URL, comma-separated, as `broker --store` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Fails the test unless `nats-server` on PATH is 2.10 or newer: Debian bookworm's 2.9.10
/// acknowledges jobs it does not store when a replicated stream is full (this suite's fault
/// test shows it), so a test against it would fail for the server's fault, not ours.
fn require_trusted_version() {
    static CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CHECKED.get_or_init(|| {
        let output = Command::new("nats-server")
            .arg("--version")
            .output()
            .expect("nats-server is on PATH (.ci/run installs 2.15.1 from PyPI)");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        // "nats-server: v2.15.1"
        let version = text.trim().rsplit('v').next().unwrap_or_default();
        let mut parts = version
            .split('.')
            .map(|part| part.parse::<u64>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        assert!(
            (major, minor) >= (2, 10),
            "nats-server {version} is too old: 2.9 loses acknowledged jobs in replicated \
             streams; put 2.10 or newer on PATH (.ci/run installs 2.15.1 from PyPI)"
        );
    });
}
