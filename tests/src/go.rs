//! The lab's Go programs (`tests/go`: the skeleton's stubs, its miner and a students' factory),
//! built with the system's Go and run as real processes beside ours, to show that the broker
//! serves them unchanged.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, OnceLock};

use crate::Process;

/// What a machine without Go is told: these tests fail without it, they never skip.
const NEEDS_GO: &str = "this test needs Go: apt-get install golang-go";

/// The Go program `name` of `tests/go` (`miner`, `factory`), built once per test process into
/// `<target>/go-bin/`.
///
/// Built as the benchmark builds it ([`nats_harness::go::command`]), with Go's caches in
/// `<target>/go-cache`, where CI keeps them between runs as it keeps cargo's.
pub fn go_program(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let target = target_dir();
    let path = target
        .join("go-bin")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("go");
    // Checked first: a missing working directory is also reported as NotFound.
    assert!(source.is_dir(), "the Go sources are missing: {source:?}");
    let build = [OsStr::new("build"), OsStr::new("-o"), path.as_os_str()];
    let output = nats_harness::go::command(&source, &target, build)
        .unwrap_or_else(|error| panic!("create Go's caches in {target:?}: {error}"))
        .arg(format!("./{name}"))
        .output()
        .unwrap_or_else(|error| match error.kind() {
            std::io::ErrorKind::NotFound => panic!("{NEEDS_GO}"),
            _ => panic!("run go build: {error}"),
        });
    assert!(
        output.status.success(),
        "go build ./{name} in {source:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    built.insert(name.to_owned(), path.clone());
    path
}

/// Cargo's target directory: tests run from `<target>/<profile>/deps/`.
fn target_dir() -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test's own path");
    test_exe
        .ancestors()
        .nth(3)
        .expect("tests run from <target>/<profile>/deps")
        .to_path_buf()
}

/// Starts the Go program `name` of `tests/go` with `args`.
pub fn start_go(name: &str, args: &[&str]) -> Process {
    let mut command = Command::new(go_program(name));
    command.args(args);
    Process::spawn(command)
}

impl Process {
    /// How the program ended, if it has; it is not waited for. For supervising a program that
    /// may die (a Go factory that panics) and starting it again.
    pub fn has_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the child")
    }
}
