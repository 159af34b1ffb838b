//! `lab new`: the starting point a student gets builds on its own, speaks our broker's protocol
//! and answers the procedures it does not compute yet with an error that says what to write.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use broker::{Outcome, Settings};
use stubs::{JobError, Pair};
use system_tests::*;

/// Where the students' projects are built: a target folder of their own beside ours, because
/// their program is also called `factory` and would overwrite ours; kept between runs, so that
/// tokio and tarpc compile once.
fn students_target() -> PathBuf {
    // Tests run from <target>/<profile>/deps/.
    let test_exe = std::env::current_exe().expect("the test's own path");
    let target = test_exe
        .ancestors()
        .nth(3)
        .expect("tests run from <target>/<profile>/deps");
    target.join("lab-new")
}

/// A cargo command for the project in `dir`, built in [`students_target`].
fn cargo_in(dir: &Path) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", students_target());
    command
}

/// Writes a starting point with `lab new` into a new temporary folder and builds it offline,
/// with the Cargo.lock it came with. Returns the folder (removed when dropped) and the factory
/// program built.
fn build_starting_point() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    lab::new::write(dir.path()).expect("lab new writes the project");
    let status = cargo_in(dir.path())
        .args(["build", "--offline", "--quiet"])
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "the starting point does not build on its own"
    );
    let program = students_target()
        .join("debug")
        .join(format!("factory{}", std::env::consts::EXE_SUFFIX));
    (dir, program)
}

/// The student's factory as a child process, killed when the test ends.
struct StudentFactory(Child);

impl StudentFactory {
    fn start(program: &Path, port: u16, broker: SocketAddr) -> Self {
        let child = Command::new(program)
            .args(["--port", &port.to_string(), "--broker", &broker.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", program.display()));
        Self(child)
    }

    /// Fails the test, with what the factory said, if it has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.0.try_wait().expect("poll the factory") {
            let mut said = String::new();
            if let Some(stderr) = self.0.stderr.as_mut() {
                let _ = stderr.read_to_string(&mut said);
            }
            panic!("the student's factory exited ({status}): {said}");
        }
    }
}

impl Drop for StudentFactory {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The job errors the broker reported for `topic`, in order.
fn job_errors(recorder: &Recorder, topic: &str) -> Vec<JobError> {
    recorder
        .outcomes()
        .into_iter()
        .filter_map(|outcome| match outcome {
            Outcome::Failed {
                topic: t, error, ..
            } if &*t == topic => Some(error),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_starting_point_builds_on_its_own_subscribes_and_says_multiply_is_not_written_yet() {
    let (_dir, program) = build_starting_point();
    let (broker, recorder) = start_broker(Settings::default()).await;
    let port = free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut factory = StudentFactory::start(&program, port, broker.address);
    eventually("the student's factory subscribes to multiply", || {
        factory.assert_running();
        subscriptions_of(&broker, address) == 1
    })
    .await;

    let client = client(broker.address).await;
    for x in 1..=2 {
        publish(&client, stubs::MULTIPLY_TOPIC, Pair { x, y: 3 }).await;
        eventually("the broker reports the job failed", || {
            job_errors(&recorder, stubs::MULTIPLY_TOPIC).len() == x as usize
        })
        .await;
    }

    for error in job_errors(&recorder, stubs::MULTIPLY_TOPIC) {
        assert!(
            error.to_string().contains("Multiply is not written yet"),
            "{error}"
        );
    }
    factory.assert_running();
    assert_eq!(subscriptions_of(&broker, address), 1, "still subscribed");
}

#[test]
fn the_starting_point_is_formatted_as_rustfmt_formats_it() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    lab::new::write(dir.path()).expect("lab new writes the project");
    let output = cargo_in(dir.path())
        .args(["fmt", "--check"])
        .output()
        .expect("run cargo fmt");
    assert!(
        output.status.success(),
        "the starting point is not formatted:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[tokio::test]
async fn lab_mark_says_the_starting_points_multiply_is_not_written_yet_and_nothing_crashes() {
    use lab::mark::parts::{MULTIPLIES, SUBSCRIBES_MULTIPLY};
    use lab::mark::{run, MarkArgs, Part};
    let (_dir, program) = build_starting_point();
    let factory = format!("{} --port {{port}} --broker {{broker}}", program.display());
    let args = MarkArgs {
        check_timeout: std::time::Duration::from_secs(2).into(),
        ..MarkArgs::new(&factory)
    };
    let report = run(&args).await;
    let subscribed = report.check(Part::One, SUBSCRIBES_MULTIPLY).unwrap();
    assert!(subscribed.passed, "{report}");
    let multiplies = report.check(Part::One, MULTIPLIES).unwrap();
    assert!(!multiplies.passed, "{report}");
    assert!(
        multiplies
            .seen
            .contains("Factory.Multiply of 12 and 34: expected 408, got the error \"Multiply is not written yet"),
        "{report}"
    );
    for check in report.parts.iter().flat_map(|part| &part.checks) {
        assert!(
            !check.seen.contains("the factory exited")
                && !check.seen.contains("the factory was killed"),
            "nothing crashes: {report}"
        );
    }
    assert!(!report.all_passed());
}
