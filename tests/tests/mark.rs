//! `lab mark`: our own factory gets full marks, and each kind of bad submission gets the ✘
//! lines it deserves, in bounded time, with every process it started gone afterwards.

use std::time::{Duration, Instant};

use lab::mark::parts::{
    DIVIDES, MULTIPLIES, MULTIPLIES_TRIPLETS, PIPELINE_COUNT, PIPELINE_DONE, PIPELINE_OPERANDS,
    RESTARTS, SUBSCRIBES_DIVIDE, SUBSCRIBES_MULTIPLY, TRIPLET_PIPELINE, ZERO_DIVISOR,
};
use lab::mark::{run, MarkArgs, Part, Report};
use system_tests::{program, program_of, Process};

/// Checks per part, as the report counts them.
const CHECKS: [(Part, usize); 4] = [
    (Part::One, 5),
    (Part::TwoA, 3),
    (Part::TwoB, 3),
    (Part::Three, 3),
];

fn our_factory(extra: &str) -> String {
    format!(
        "{} --port {{port}} --broker {{broker}} {extra}",
        program("factory").display()
    )
}

fn bad_factory(mode: &str) -> String {
    format!(
        "{} --mode {mode} --port {{port}} --broker {{broker}}",
        program_of("system-tests", "bad-factory").display()
    )
}

/// Short deadlines, for the factories that make the harness wait them out. Tests that expect a
/// check to pass keep the default deadlines, which a loaded machine still meets.
fn quick(factory: &str) -> MarkArgs {
    MarkArgs {
        start_timeout: Duration::from_secs(20).into(),
        check_timeout: Duration::from_secs(2).into(),
        call_timeout: Duration::from_secs(1).into(),
        stop_timeout: Duration::from_secs(1).into(),
        ..MarkArgs::new(factory)
    }
}

/// The checks that failed, as (part, check).
fn failures(report: &Report) -> Vec<(Part, String)> {
    report
        .parts
        .iter()
        .flat_map(|part| {
            part.checks
                .iter()
                .filter(|check| !check.passed)
                .map(move |check| (part.part, check.check.clone()))
        })
        .collect()
}

fn seen(report: &Report, part: Part, check: &str) -> String {
    let made = report
        .check(part, check)
        .unwrap_or_else(|| panic!("no check {check:?} in part {part}:\n{report}"));
    made.seen.clone()
}

/// The checks that a factory without the pipeline fails, and nothing else does.
fn without_pipeline() -> Vec<(Part, String)> {
    [
        (Part::TwoB, PIPELINE_COUNT),
        (Part::TwoB, PIPELINE_OPERANDS),
        (Part::TwoB, PIPELINE_DONE),
        (Part::Three, TRIPLET_PIPELINE),
    ]
    .map(|(part, check)| (part, check.to_owned()))
    .to_vec()
}

/// Checks that the zero-divisor check of `report` says a division by zero killed the factory,
/// with its last words: what it saw.
fn assert_killed_by_zero(report: &Report) -> String {
    let seen = seen(report, Part::TwoA, ZERO_DIVISOR);
    assert!(
        seen.starts_with("a division by zero killed the factory"),
        "{seen}"
    );
    assert!(
        seen.contains("integer divide by zero"),
        "its last words: {seen}"
    );
    seen
}

/// Fails the test unless less than `limit` has passed since `started`; `what` names what ran.
fn assert_took_less(started: Instant, limit: Duration, what: &str) {
    let took = started.elapsed();
    assert!(took < limit, "{what} took {took:?}");
}

#[tokio::test]
async fn our_factory_gets_full_marks() {
    let started = Instant::now();
    let report = run(&MarkArgs::new(&our_factory(""))).await;
    assert!(report.all_passed(), "{report}");
    for (part, total) in CHECKS {
        let made = report.parts.iter().find(|made| made.part == part).unwrap();
        assert_eq!((made.passed, made.total), (total, total), "{report}");
    }
    assert_eq!((report.passed, report.total), (14, 14));
    assert_eq!(seen(&report, Part::One, MULTIPLIES), "5 of 5 right");
    assert!(
        seen(&report, Part::TwoB, PIPELINE_COUNT)
            .starts_with("3 Pairs published to divide after 6 Multiply results"),
        "{report}"
    );
    // A marker has hundreds of submissions.
    assert_took_less(started, Duration::from_secs(30), "marking");
}

#[tokio::test]
async fn a_factory_without_its_pipeline_fails_the_pipeline_checks_and_nothing_else() {
    let report = run(&MarkArgs::new(&our_factory("--no-pipeline"))).await;
    assert_eq!(failures(&report), without_pipeline(), "{report}");
    assert!(
        seen(&report, Part::TwoB, PIPELINE_COUNT).contains("nothing was published to divide"),
        "{report}"
    );
}

#[tokio::test]
async fn a_factory_on_multiply_alone_fails_part_2a_and_nothing_of_part_1() {
    let report = run(&MarkArgs::new(&our_factory("--topics multiply"))).await;
    let failed = failures(&report);
    for check in [SUBSCRIBES_DIVIDE, DIVIDES, ZERO_DIVISOR] {
        assert!(failed.contains(&(Part::TwoA, check.to_owned())), "{report}");
    }
    assert!(
        !failed.iter().any(|(part, _)| *part == Part::One),
        "{report}"
    );
    assert!(
        seen(&report, Part::TwoA, SUBSCRIBES_DIVIDE).contains("no subscription to \"divide\""),
        "{report}"
    );
    // Without a divide subscription, the pipeline's Pairs wait: that is Part 2b's to say.
    assert!(
        failed.contains(&(Part::TwoB, PIPELINE_DONE.to_owned())),
        "{report}"
    );
    assert!(
        !failed.contains(&(Part::TwoB, PIPELINE_COUNT.to_owned())),
        "{report}"
    );
}

#[tokio::test]
async fn a_wrong_multiply_gets_its_lines_and_exit_status_1() {
    let mut lab = Process::start(
        "lab",
        &[
            "mark",
            "--parts",
            "1",
            "--check-timeout",
            "2s",
            "--factory",
            &bad_factory("add"),
        ],
    );
    let status = lab.exit_status().await;
    assert_eq!(status.code(), Some(1), "{}", lab.lines().join("\n"));
    let lines = lab.lines();
    let line = lines
        .iter()
        .find(|line| line.contains(MULTIPLIES))
        .unwrap_or_else(|| panic!("no Multiply line in:\n{}", lines.join("\n")));
    assert!(line.starts_with("Part 1"), "{line}");
    assert!(line.contains('✘'), "{line}");
    assert!(
        line.contains("Factory.Multiply of 12 and 34: expected 408, got 46"),
        "{line}"
    );
    assert!(
        line.contains("Factory.Multiply of -7 and 6: expected -42, got -1"),
        "{line}"
    );
    assert!(
        lines.contains(&"Part 1: 4/5".to_owned()),
        "{}",
        lines.join("\n")
    );
    assert!(
        lines.contains(&"Total: 4/5".to_owned()),
        "{}",
        lines.join("\n")
    );
}

#[tokio::test]
async fn the_json_report_has_the_grade_sheet_shape() {
    let mut lab = Process::start(
        "lab",
        &[
            "mark",
            "--parts",
            "1,2a",
            "--json",
            "--factory",
            &our_factory(""),
        ],
    );
    assert_eq!(lab.exit_status().await.code(), Some(0));
    let json: serde_json::Value =
        serde_json::from_str(&lab.lines().join("\n")).expect("one JSON object");
    assert_eq!(json["passed"], 8);
    assert_eq!(json["total"], 8);
    let parts = json["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["part"], "1");
    assert_eq!(parts[1]["part"], "2a");
    assert_eq!(parts[0]["passed"], 5);
    let check = &parts[0]["checks"][1];
    assert_eq!(check["check"], MULTIPLIES);
    assert_eq!(check["passed"], true);
    assert!(check["expected"].is_string() && check["seen"].is_string());
}

#[tokio::test]
async fn a_command_that_exits_at_once_ends_quickly_with_its_reason() {
    let started = Instant::now();
    let report = run(&quick(&bad_factory("exit"))).await;
    assert_eq!(report.passed, 0, "{report}");
    assert_eq!(report.total, 14, "every check has its line:\n{report}");
    let seen = seen(&report, Part::One, SUBSCRIBES_MULTIPLY);
    assert!(
        seen.contains("exited with status 3 before it subscribed"),
        "{seen}"
    );
    assert!(seen.contains("exiting at once"), "its last words: {seen}");
    assert_took_less(started, Duration::from_secs(20), "marking");
}

#[tokio::test]
async fn a_command_that_does_not_exist_fails_with_the_shells_words() {
    let report = run(&quick("./no-such-factory --port {port}")).await;
    let seen = seen(&report, Part::One, SUBSCRIBES_MULTIPLY);
    assert!(seen.contains("exited with status 127"), "{seen}");
    assert!(seen.contains("not found"), "{seen}");
}

#[tokio::test]
async fn factories_that_never_subscribe_or_subscribe_wrongly_are_told_why() {
    let args = MarkArgs {
        parts: vec![Part::One],
        start_timeout: Duration::from_secs(3).into(),
        ..quick(&bad_factory("silent"))
    };
    let report = run(&args).await;
    let silent = seen(&report, Part::One, SUBSCRIBES_MULTIPLY);
    assert!(
        silent == "no subscription within 3s of the start",
        "{silent}"
    );
    assert!(
        seen(&report, Part::One, MULTIPLIES).starts_with("not made"),
        "{report}"
    );

    let report = run(&MarkArgs {
        factory: bad_factory("wrong-callback"),
        ..args.clone()
    })
    .await;
    let wrong = seen(&report, Part::One, SUBSCRIBES_MULTIPLY);
    assert!(
        wrong.contains("with \"Factory.Mul\" was refused: unknown callback"),
        "{wrong}"
    );

    let report = run(&MarkArgs {
        factory: bad_factory("wrong-address"),
        ..args
    })
    .await;
    let wrong = seen(&report, Part::One, SUBSCRIBES_MULTIPLY);
    assert!(
        wrong.contains(
            "from 127.0.0.1:1 with \"Factory.Multiply\" was refused: cannot reach the factory"
        ),
        "{wrong}"
    );
}

#[tokio::test]
async fn a_factory_killed_by_a_zero_divisor_fails_that_check_and_marking_goes_on() {
    let report = run(&MarkArgs::new(&bad_factory("abort-on-zero"))).await;
    // It has no pipeline either; all else it does right, in the parts after 2a too.
    let mut expected = vec![(Part::TwoA, ZERO_DIVISOR.to_owned())];
    expected.extend(without_pipeline());
    assert_eq!(failures(&report), expected, "{report}");
    let seen = assert_killed_by_zero(&report);
    assert!(seen.contains("SIGABRT"), "{seen}");
}

#[tokio::test]
async fn hung_and_panicking_factories_end_in_bounded_time_with_reasons() {
    for (mode, reason) in [
        ("stop", "no reply within"),
        ("spin", "no reply within"),
        ("panic", "the call failed"),
    ] {
        let started = Instant::now();
        let args = MarkArgs {
            parts: vec![Part::One, Part::Three],
            ..quick(&bad_factory(mode))
        };
        let report = run(&args).await;
        assert!(
            report.check(Part::One, SUBSCRIBES_MULTIPLY).unwrap().passed,
            "{mode}: {report}"
        );
        for (part, check) in [(Part::One, MULTIPLIES), (Part::Three, MULTIPLIES_TRIPLETS)] {
            let seen = seen(&report, part, check);
            assert!(seen.contains(reason), "{mode}, {check}: {seen}");
        }
        // Started again, it hangs again.
        assert!(
            !report.check(Part::One, RESTARTS).unwrap().passed,
            "{mode}: {report}"
        );
        // Two parts, each check within its deadline: well under a minute.
        assert_took_less(started, Duration::from_secs(60), mode);
    }
}

#[tokio::test]
async fn a_factory_that_floods_the_broker_is_marked_in_bounded_time() {
    let started = Instant::now();
    let args = MarkArgs {
        parts: vec![Part::One, Part::TwoB],
        ..quick(&bad_factory("flood"))
    };
    let report = run(&args).await;
    assert!(
        report.check(Part::One, SUBSCRIBES_MULTIPLY).unwrap().passed,
        "{report}"
    );
    // Its flood of Pairs to multiply makes the pipeline's count wrong, whatever else it does.
    assert!(!report.all_passed(), "{report}");
    assert_took_less(started, Duration::from_secs(60), "marking");
}

#[tokio::test]
async fn ctrl_c_stops_the_marking_and_kills_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    // The factory's shell leaves a child behind, as `cargo run` does.
    let factory = format!(
        "sleep 1000 & echo $! > {}; exec {}",
        pid_file.display(),
        bad_factory("silent")
    );
    let mut lab = Process::start("lab", &["mark", "--factory", &factory]);
    system_tests::eventually("the factory's child to start", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|pid| !pid.trim().is_empty())
    })
    .await;
    let child: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    lab.signal("INT");
    assert_eq!(lab.exit_status().await.code(), Some(130));
    system_tests::eventually("the factory's child to be killed", || !alive(child)).await;
}

/// Whether `pid` is a process that is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// The project's Go factory, in the lab skeleton's shape, as a marker would run a Go submission.
fn go_factory(flags: &str) -> String {
    format!(
        "{} {flags} -ip 127.0.0.1:{{port}} -broker {{broker}}",
        system_tests::go::go_program("factory").display()
    )
}

#[tokio::test]
async fn a_go_factory_is_marked_as_a_rust_one_and_gets_full_marks() {
    let pairs = run(&MarkArgs {
        parts: vec![Part::One, Part::TwoA, Part::TwoB],
        ..MarkArgs::new(&go_factory(""))
    })
    .await;
    assert!(pairs.all_passed(), "{pairs}");
    assert_eq!(pairs.total, 11);
    // The Go skeleton's Part 3 is a factory of Triplets alone.
    let triplets = run(&MarkArgs {
        parts: vec![Part::Three],
        ..MarkArgs::new(&go_factory("-triplets"))
    })
    .await;
    assert!(triplets.all_passed(), "{triplets}");
}

#[tokio::test]
async fn a_go_factory_with_parts_left_out_fails_just_those() {
    let no_divide = run(&MarkArgs {
        parts: vec![Part::One, Part::TwoA],
        ..MarkArgs::new(&go_factory("-no-divide -no-pipeline"))
    })
    .await;
    assert_eq!(
        failures(&no_divide),
        vec![
            (Part::TwoA, SUBSCRIBES_DIVIDE.to_owned()),
            (Part::TwoA, DIVIDES.to_owned()),
            (Part::TwoA, ZERO_DIVISOR.to_owned()),
        ],
        "{no_divide}"
    );
    let no_pipeline = run(&MarkArgs {
        parts: vec![Part::TwoB],
        ..MarkArgs::new(&go_factory("-no-pipeline"))
    })
    .await;
    assert_eq!(no_pipeline.passed, 0, "{no_pipeline}");
    // The Go original's weak spot: a zero divisor panics the whole factory.
    let panics = run(&MarkArgs {
        parts: vec![Part::TwoA],
        ..MarkArgs::new(&go_factory("-panic-on-zero"))
    })
    .await;
    assert_eq!(
        failures(&panics),
        vec![(Part::TwoA, ZERO_DIVISOR.to_owned())],
        "{panics}"
    );
    assert_killed_by_zero(&panics);
}
