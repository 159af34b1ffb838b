//! The runner's smoke run, as CI runs it: every workload with a few hundred jobs, through the
//! real programs (the Go lab's too: these tests need Go, and fail without it), and the report
//! and charts it writes.

use std::process::Command;

#[test]
fn a_smoke_run_measures_every_workload_and_draws_both_charts() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["all", "--smoke", "--out"])
        .arg(out.path())
        .output()
        .expect("run the bench program");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    let lines: Vec<&str> = stdout.lines().collect();
    let line_of = |prefix: &str| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|line| line.starts_with(prefix))
            .collect()
    };
    assert_eq!(line_of("W1 ").len(), 1, "{stdout}");
    assert!(line_of("W1 ")[0].contains("200 jobs"), "{stdout}");
    assert!(line_of("W2 ")[0].contains("jobs/s"), "{stdout}");
    assert!(
        line_of("W1go ")[0].contains("200 jobs"),
        "the Go lab's programs ran W1's shape: {stdout}"
    );
    for name in ["W1 ", "W2 ", "W1go ", "W2go "] {
        assert!(line_of(name)[0].contains("µs/job"), "{stdout}");
    }
    for comparison in ["W1 vs W1go", "W2 vs W2go"] {
        let prefix = format!("ours vs the Go lab's, {comparison}: ");
        assert_eq!(line_of(&prefix).len(), 1, "{stdout}");
    }
    assert!(line_of("W3 ")[0].contains("p99"), "{stdout}");
    assert!(line_of("M ")[0].contains("broker RSS"), "{stdout}");
    assert_eq!(
        line_of("S ").len(),
        4,
        "one line per factory count: {stdout}"
    );
    assert!(
        line_of("W2d ")[0].contains("jobs/s, publish ack p99"),
        "{stdout}"
    );
    assert!(
        line_of("Md ")[0].contains("bytes a job on disk, recovery"),
        "{stdout}"
    );
    assert!(
        !line_of("Md ")[0].contains("recovery 0 ms"),
        "the recovery is timed: {stdout}"
    );

    let report = std::fs::read_to_string(out.path().join("latest.md")).unwrap();
    assert_eq!(report.matches("\n| S |").count(), 4, "{report}");
    assert!(
        report.contains("## The Go lab's miner and factories through our broker"),
        "{report}"
    );
    assert!(report.contains("\n| W2 / W2go | "), "{report}");
    for chart in ["scaling.svg", "latency.svg"] {
        let svg = std::fs::read_to_string(out.path().join(chart)).unwrap();
        assert!(svg.starts_with("<svg"), "{chart}: {svg:.80}");
    }
    let latency = std::fs::read_to_string(out.path().join("latency.svg")).unwrap();
    // At least one bar: a filled rectangle besides the white background.
    assert!(latency.matches("<rect").count() >= 2, "{latency:.400}");
}

#[test]
fn a_go_workload_without_go_fails_and_says_how_to_install_it() {
    let out = tempfile::tempdir().unwrap();
    // A PATH with nothing on it: no `go` to find.
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["w1go", "--smoke", "--out"])
        .arg(out.path())
        .env("PATH", empty.path())
        .output()
        .expect("run the bench program");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("install Go: apt-get install golang-go"),
        "{stderr}"
    );
}
