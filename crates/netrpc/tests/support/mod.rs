//! Building and running the Go programs under `tests/go/` that the interop tests talk to.

// Each test file compiles this module for itself and uses only part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a Go program may take to print its first line. A build is done before this
/// starts; starting a Go binary takes milliseconds.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Binaries built so far by this test process, by program name: each is built once.
static BUILT: parking_lot::Mutex<Option<HashMap<String, PathBuf>>> = parking_lot::Mutex::new(None);

/// Builds `tests/go/<name>` with the standard library only, with every file Go writes kept
/// in cargo's target directory, never in $HOME and never fetched from the network.
pub fn go_binary(name: &str) -> PathBuf {
    // Held while building, so that two tests needing the same program build it once.
    let mut built = BUILT.lock();
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("netrpc-go");
    let output = scratch.join("bin").join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/go")
        .join(name);
    let result = std::process::Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&output)
        .arg(".")
        .current_dir(&source)
        .env("GOCACHE", scratch.join("cache"))
        .env("GOPATH", scratch.join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOENV", "off")
        .output();
    let result = match result {
        Ok(result) => result,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "`go` is not on PATH: the interop tests build Go programs; \
             install Go with `apt-get install golang-go`"
        ),
        Err(error) => panic!("cannot run `go build`: {error}"),
    };
    assert!(
        result.status.success(),
        "`go build` of tests/go/{name} failed:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    built.insert(name.to_owned(), output.clone());
    output
}

/// Starts a built Go program; it is killed when the returned child is dropped, so a failing
/// test leaves nothing running.
pub fn spawn(binary: &Path, args: &[&str]) -> Child {
    Command::new(binary)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()))
}

/// Reads the first line a child prints, within [`STARTUP_TIMEOUT`].
pub async fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    tokio::time::timeout(STARTUP_TIMEOUT, lines.next_line())
        .await
        .expect("the Go program printed nothing in time")
        .expect("reading the Go program's output")
        .expect("the Go program exited before printing")
}
