//! The factory under marking, as a process: started with `sh -c` in a process group of its own,
//! so that everything it starts (a `cargo run`, say) is stopped with it, and its last lines kept
//! as evidence.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

/// How many of its last lines a factory's evidence quotes.
const LAST_LINES: usize = 4;
/// How many of its last lines the harness keeps: enough to find a panic's own line above the
/// stack trace that follows it.
const KEPT_LINES: usize = 40;
/// The longest line kept: a factory that writes without newlines cannot grow the harness.
const MAX_LINE: usize = 300;
/// How often a stopping factory is checked for its exit.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// A factory process and its process group.
pub struct FactoryProcess {
    child: Child,
    /// The process group: the shell's id, as it leads the group.
    group: Option<i32>,
    /// The port `{port}` stood for.
    pub port: u16,
    lines: Arc<Mutex<VecDeque<String>>>,
    status: Option<ExitStatus>,
}

/// How a factory ended by itself: evidence for a ✘.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// `exited with status 1`, or `was killed by signal 6 (SIGABRT)`.
    pub status: String,
    /// `; its last lines: …`, or nothing.
    pub last_words: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.status, self.last_words)
    }
}

/// How a factory ended when it was stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It exited within the grace period after SIGINT.
    OnInterrupt(Duration),
    /// It was still running at the end of the grace period and was killed.
    Killed,
    /// It had exited before it was asked to.
    Earlier(Exit),
}

impl FactoryProcess {
    /// Starts `command` with `{port}`, `{broker}` and `{tls-dir}` replaced (the last with
    /// nothing when there is no `tls_dir`).
    pub fn start(
        command: &str,
        port: u16,
        broker: SocketAddr,
        tls_dir: Option<&std::path::Path>,
    ) -> std::io::Result<Self> {
        let tls_dir = tls_dir.map(|dir| dir.display().to_string());
        let command = command
            .replace("{port}", &port.to_string())
            .replace("{broker}", &broker.to_string())
            .replace("{tls-dir}", tls_dir.as_deref().unwrap_or_default());
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(keep_last_lines(stdout, lines.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(keep_last_lines(stderr, lines.clone()));
        }
        let group = child.id().and_then(|id| i32::try_from(id).ok());
        Ok(Self {
            child,
            group,
            port,
            lines,
            status: None,
        })
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// How the process ended, with its last lines: evidence for a ✘.
    pub fn describe_exit(&mut self) -> Option<Exit> {
        let status = self.exited()?;
        Some(Exit {
            status: describe(status),
            last_words: self.last_words(),
        })
    }

    /// `; its last lines: …`, or nothing when it printed nothing. A panic's line (Rust's
    /// `panicked at`, Go's `panic:`) is quoted first when the stack trace after it would push
    /// it out of the last lines.
    pub fn last_words(&self) -> String {
        let lines = self.lines.lock();
        if lines.is_empty() {
            return String::new();
        }
        let last = lines.len().saturating_sub(LAST_LINES);
        let mut quoted: Vec<&str> = Vec::new();
        if let Some(panic) = lines
            .iter()
            .take(last)
            .find(|line| line.contains("panicked at") || line.starts_with("panic:"))
        {
            quoted.push(panic);
            quoted.push("…");
        }
        quoted.extend(lines.iter().skip(last).map(String::as_str));
        format!("; its last lines: {}", quoted.join(" | "))
    }

    /// SIGINT to the group, as Ctrl-C would, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Stopped {
        if let Some(exit) = self.describe_exit() {
            self.kill_group();
            return Stopped::Earlier(exit);
        }
        let started = Instant::now();
        self.signal(libc::SIGINT);
        while started.elapsed() < grace {
            if self.exited().is_some() {
                // What it started may outlive it.
                self.kill_group();
                return Stopped::OnInterrupt(started.elapsed());
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
        self.kill().await;
        Stopped::Killed
    }

    /// SIGKILL to the whole group, and the shell reaped.
    pub async fn kill(&mut self) {
        self.kill_group();
        if let Ok(status) = self.child.wait().await {
            self.status = Some(status);
        }
    }

    fn kill_group(&self) {
        self.signal(libc::SIGKILL);
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(group) = self.group {
            // SAFETY: kill(2) with a negative pid signals a process group; it touches no memory
            // of ours. A group that is gone already answers ESRCH, which is fine here.
            unsafe {
                libc::kill(-group, signal);
            }
        }
    }
}

/// Whatever happens to the harness (a panic, Ctrl-C dropping the marking), nothing it started
/// outlives it.
impl Drop for FactoryProcess {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// What `sh` adds to a signal's number for the exit status of a program that signal killed.
const SHELL_SIGNALLED: i32 = 128;

/// `exited with status 1`, or `was killed by signal 6 (SIGABRT)`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        // The shell reports a program it ran that a signal killed as 128 + the signal.
        (Some(code), _) if code > SHELL_SIGNALLED && code - SHELL_SIGNALLED < 64 => {
            let signal = code - SHELL_SIGNALLED;
            format!(
                "exited with status {code}: killed by signal {signal}{}",
                signal_name(signal)
            )
        }
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}{}", signal_name(signal)),
        (None, None) => format!("ended ({status})"),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGFPE => " (SIGFPE)",
        _ => "",
    }
}

/// Reads `output` to its end, keeping its last [`LAST_LINES`] lines, each cut to [`MAX_LINE`]
/// bytes. It reads everything, so that a factory that prints a lot never blocks on a full pipe.
async fn keep_last_lines(mut output: impl AsyncRead + Unpin, lines: Arc<Mutex<VecDeque<String>>>) {
    let mut buffer = [0u8; 4096];
    let mut line = Vec::new();
    loop {
        let read = match output.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for &byte in &buffer[..read] {
            if byte == b'\n' {
                push_line(&lines, &line);
                line.clear();
            } else if line.len() < MAX_LINE {
                line.push(byte);
            }
        }
    }
    if !line.is_empty() {
        push_line(&lines, &line);
    }
}

fn push_line(lines: &Mutex<VecDeque<String>>, line: &[u8]) {
    let text = String::from_utf8_lossy(line).trim_end().to_owned();
    if text.is_empty() {
        return;
    }
    let mut lines = lines.lock();
    if lines.len() == KEPT_LINES {
        lines.pop_front();
    }
    lines.push_back(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[tokio::test]
    async fn a_command_that_exits_is_described_with_its_last_lines() {
        let mut process = FactoryProcess::start(
            "echo port {port} broker {broker}; echo oops >&2; exit 3",
            41,
            broker(),
            None,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while process.exited().is_none() && Instant::now() < deadline {
            tokio::time::sleep(EXIT_POLL).await;
        }
        // The readers may be a moment behind the exit.
        while !process.last_words().contains("oops") && Instant::now() < deadline {
            tokio::time::sleep(EXIT_POLL).await;
        }
        let exit = process.describe_exit().unwrap().to_string();
        assert!(exit.starts_with("exited with status 3"), "{exit}");
        assert!(exit.contains("port 41 broker 127.0.0.1:9"), "{exit}");
        assert!(exit.contains("oops"), "{exit}");
    }

    #[tokio::test]
    async fn a_command_that_ignores_sigint_is_killed_with_what_it_started() {
        let mut process = FactoryProcess::start(
            "trap '' INT; sleep 1000 & sleep 1000; wait",
            1,
            broker(),
            None,
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped = process.stop(Duration::from_millis(300)).await;
        assert_eq!(stopped, Stopped::Killed);
        let group = process.group.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while living_in_group(group) > 0 && Instant::now() < deadline {
            tokio::time::sleep(EXIT_POLL).await;
        }
        assert_eq!(
            living_in_group(group),
            0,
            "a process of the group outlived the kill"
        );
    }

    /// Processes of `group` that are not zombies (a zombie whose parent is gone waits for a
    /// reaper, which a container may not have), from /proc.
    fn living_in_group(group: i32) -> usize {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
            .filter(|stat| {
                // pid (comm) state ppid pgrp ...: the fields after the command's closing paren.
                let Some((_, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let fields: Vec<&str> = rest.split_whitespace().collect();
                fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string()
            })
            .count()
    }
}
