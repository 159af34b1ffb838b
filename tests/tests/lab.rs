//! The one-command lab: `cargo run -p lab` runs a broker, two factories and a miner, and says
//! at the end what they did and why the numbers are what they are.

use std::process::Command;

use lab::cli::{run, LabArgs};
use system_tests::*;

#[tokio::test]
async fn the_lab_runs_end_to_end_and_its_summary_adds_up_what_each_pipeline_paired() {
    let cli = LabArgs {
        port: 0,
        factories: 2,
        triplets: false,
        divide_miner: true,
        no_pipeline: false,
        interval: std::time::Duration::from_millis(1).into(),
        count: Some(20),
        seed: Some(5),
        tls_dir: None,
    };
    let summary = run(cli, Default::default()).await.expect("the lab runs");
    assert_eq!(summary.multiplied, 20, "{summary:?}");
    assert_eq!((summary.failed, summary.unfinished), (0, 0), "{summary:?}");
    assert_eq!(summary.divide_miner, Some(20), "{summary:?}");
    assert_eq!(
        summary.divided,
        20 + summary.pipelines_published(),
        "divide = the divide miner's jobs + the pipelines' pairs: {summary:?}"
    );
    assert_eq!(summary.pipelines.len(), 2, "{summary:?}");
    let mut results = 0;
    for pipeline in &summary.pipelines {
        let report = pipeline.report.as_ref().expect("every pipeline reports");
        assert_eq!(
            report.leftovers.pairs.len() as u64,
            report.pair_results - 2 * report.pairs_published,
            "unpaired = results - 2 x pairs, in {}: {report:?}",
            pipeline.factory
        );
        assert!(report.leftovers.pairs.len() <= 1, "{report:?}");
        results += report.pair_results;
    }
    assert_eq!(
        results, summary.multiplied,
        "each multiply result reached one pipeline: {summary:?}"
    );
}

/// A lab run that stops by itself within a few seconds, with both miners and the pipeline.
const SHORT_RUN: &[&str] = &[
    "--count",
    "20",
    "--interval",
    "5ms",
    "--divide-miner",
    "--seed",
    "5",
    "--port",
    "0",
];

/// The lab's stdout: its lines, once it has exited by itself with success.
async fn lines_of_a_lab_run(args: &[&str]) -> Vec<String> {
    let mut lab = Process::start("lab", args);
    let status = lab.exit_status().await;
    assert!(status.success(), "{status}: {}", lab.last_errors(20));
    // The lines are read on a thread of their own, which may lag behind the exit.
    eventually("the lab's summary line is read", || {
        lab.lines().iter().any(|line| line.starts_with("lab: "))
    })
    .await;
    lab.lines()
}

/// The number just before `words` in `line`: 29 in `... and 29 divide jobs completed`.
fn number_before(line: &str, words: &str) -> u64 {
    let (before, _) = line
        .split_once(words)
        .unwrap_or_else(|| panic!("no {words:?} in {line:?}"));
    let number = before.rsplit(' ').next().unwrap_or_default();
    number
        .parse()
        .unwrap_or_else(|_| panic!("no number before {words:?} in {line:?}"))
}

#[tokio::test]
async fn the_lab_program_ends_with_a_summary_that_explains_the_divide_count() {
    let lines = lines_of_a_lab_run(SHORT_RUN).await;
    let summary = lines
        .iter()
        .find(|line| line.starts_with("lab: "))
        .expect("a summary line");
    assert!(
        summary.starts_with("lab: 20 multiply and ")
            && summary
                .contains(" divide jobs completed, 0 failed; divide = 20 from the divide miner + ")
            && summary
                .contains(" from the pipelines (each factory pairs its own results: factory1 had "),
        "{summary}"
    );
    let divided = number_before(summary, " divide jobs completed");
    let from_pipelines = number_before(summary, " from the pipelines");
    assert_eq!(divided, 20 + from_pipelines, "{summary}");
    let pipeline_lines = lines
        .iter()
        .filter(|line| line.contains("| pipeline: "))
        .count() as u64;
    assert_eq!(pipeline_lines, from_pipelines, "{summary}");
}

#[tokio::test]
async fn each_pipeline_line_comes_before_the_divide_it_caused() {
    let lines = lines_of_a_lab_run(SHORT_RUN).await;
    let mut pipelines = 0;
    for (at, line) in lines.iter().enumerate() {
        let Some((_, caused)) = line.split_once("| pipeline: ") else {
            continue;
        };
        pipelines += 1;
        // `408 and 12 -> divide`: the broker says `Factory.Divide of 408 and 12 is 34`, and the
        // factory that divides `408 / 12 = 34`.
        let job = caused.split(" -> ").next().expect("a job");
        let by_broker = format!("| Factory.Divide of {job} ");
        let by_factory = format!("| {} = ", job.replace(" and ", " / "));
        let divided_at = |said: &str| lines.iter().position(|line| line.contains(said));
        for said in [by_broker, by_factory] {
            let divided_at = divided_at(&said).unwrap_or_else(|| panic!("no {said:?} line"));
            assert!(
                divided_at > at,
                "{:?} (line {divided_at}) comes before {line:?} (line {at})",
                lines[divided_at]
            );
        }
    }
    assert!(pipelines >= 9, "20 multiply results make 9 or 10 pairs");
}

#[test]
fn the_lab_refuses_to_run_without_factories() {
    let output = Command::new(program("lab"))
        .args(["--factories", "0", "--port", "0"])
        .output()
        .expect("run lab");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.lines().next(),
        Some("error: invalid value '0' for '--factories <N>': 0 is not in 1..=64"),
        "{stderr}"
    );
}

/// Every line of one short lab run, results and logs alike, with the ports it was given
/// replaced by names. Lines of the components interleave differently from run to run, so they
/// are compared in sorted order; who printed each, and what, is pinned.
#[tokio::test]
async fn one_lab_run_prints_these_lines_and_no_others() {
    let mut command = Command::new(program("lab"));
    command
        .args(["--port", "0", "--factories", "1", "--count", "5"])
        .args(["--interval", "100ms", "--seed", "7"])
        .env_remove("RUST_LOG");
    let mut lab = Process::spawn(command);
    let status = lab.exit_status().await;
    assert!(status.success(), "{status}: {}", lab.last_errors(20));
    eventually("the lab's summary line is read", || {
        lab.lines().iter().any(|line| line.starts_with("lab: "))
    })
    .await;
    let logs = lab.last_errors(usize::MAX);
    let mut printed: Vec<String> = lab
        .lines()
        .into_iter()
        .chain(logs.lines().map(str::to_owned))
        .collect();
    let named = |line: &str, words: &str| {
        let (_, address) = line.split_once(words)?;
        Some(address.to_owned())
    };
    let broker = printed
        .iter()
        .find_map(|line| named(line, "the broker listens on "))
        .expect("the broker's address is printed");
    let factory = printed
        .iter()
        .find_map(|line| named(line, "factory 1 serves on "))
        .expect("the factory's address is printed");
    for line in &mut printed {
        *line = line.replace(&broker, "BROKER").replace(&factory, "FACTORY");
        // Whichever of the miner and the factory asks first creates the topic.
        for topic in ["multiply", "divide"] {
            *line = line
                .replace(
                    &format!("created topic {topic:?}"),
                    &format!("topic {topic:?} ready"),
                )
                .replace(
                    &format!("topic {topic:?} exists"),
                    &format!("topic {topic:?} ready"),
                );
        }
        // The pipeline's Divide jobs take ids between the miner's, as they come.
        if let Some(at) = line.find("(job ") {
            line.replace_range(at.., "(job N)");
        }
    }
    printed.sort();
    let mut expected: Vec<&str> = PINNED_LAB_RUN.lines().collect();
    expected.sort();
    assert_eq!(
        printed,
        expected,
        "the lines of the run, sorted:\n{}",
        printed.join("\n")
    );
}

/// What `lab --port 0 --factories 1 --count 5 --interval 100ms --seed 7` prints.
const PINNED_LAB_RUN: &str = "\
broker   | Factory.Divide of 259180689864464654 and 45052570617648140 is 5
broker   | Factory.Divide of 9310045730176524 and 77385821620610202 is 0
broker   | Factory.Multiply of 125220589 and 723451923 is 90591075911242647
broker   | Factory.Multiply of 142642157 and 542517186 is 77385821620610202
broker   | Factory.Multiply of 175461631 and 256765940 is 45052570617648140
broker   | Factory.Multiply of 272497277 and 951131302 is 259180689864464654
broker   | Factory.Multiply of 30317361 and 307086284 is 9310045730176524
broker   | subscribed FACTORY to \"divide\" with Factory.Divide (tarpc, prefetch 1)
broker   | subscribed FACTORY to \"multiply\" with Factory.Multiply (tarpc, prefetch 1)
broker   | topic \"divide\" ready with buffer 10
broker   | topic \"multiply\" ready with buffer 10
broker   | unsubscribed FACTORY from \"divide\" with Factory.Divide
broker   | unsubscribed FACTORY from \"multiply\" with Factory.Multiply
factory1 | 125220589 * 723451923 = 90591075911242647
factory1 | 142642157 * 542517186 = 77385821620610202
factory1 | 175461631 * 256765940 = 45052570617648140
factory1 | 259180689864464654 / 45052570617648140 = 5
factory1 | 272497277 * 951131302 = 259180689864464654
factory1 | 30317361 * 307086284 = 9310045730176524
factory1 | 9310045730176524 / 77385821620610202 = 0
factory1 | pipeline: 259180689864464654 and 45052570617648140 -> divide
factory1 | pipeline: 9310045730176524 and 77385821620610202 -> divide
factory1 | stopping: unsubscribing and finishing the calls in flight
factory1 | subscribed FACTORY to \"divide\" with Factory.Divide (prefetch 1)
factory1 | subscribed FACTORY to \"multiply\" with Factory.Multiply (prefetch 1)
factory1 | the pipeline stopped with 1 Pair result without a partner (90591075911242647)
factory1 | topic \"divide\" ready with buffer 10
factory1 | topic \"multiply\" ready with buffer 10
factory1 | working on FACTORY
lab      | factory 1 serves on FACTORY
lab      | the broker listens on BROKER
lab      | the multiply miner is done: it published 5 jobs
lab: 5 multiply and 2 divide jobs completed, 0 failed; divide = 2 from the pipelines (each factory pairs its own results: factory1 had 5, paired 4, 1 left unpaired)
miner-mul| published 125220589 and 723451923 to multiply (job N)
miner-mul| published 142642157 and 542517186 to multiply (job N)
miner-mul| published 175461631 and 256765940 to multiply (job N)
miner-mul| published 272497277 and 951131302 to multiply (job N)
miner-mul| published 30317361 and 307086284 to multiply (job N)
miner-mul| topic \"multiply\" ready with buffer 10
";
