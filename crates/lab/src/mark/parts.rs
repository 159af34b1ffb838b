//! The checks of each part of the lab sheet, each judged by what the harness's broker sees.

use std::collections::HashMap;

use broker::Outcome;
use stubs::{Job, Pair, Triplet, DIVIDE, DIVIDE_TOPIC, MULTIPLY, MULTIPLY_TOPIC};

use super::process::Stopped;
use super::report::{Check, Part, PartReport};
use super::session::{free_port, Answer, Session, Waited};
use super::MarkArgs;

/// Multiply jobs of Part 1: small, large, negative and zero operands.
const PRODUCTS: [(i64, i64); 5] = [
    (12, 34),
    (999_999_999, 999_999_999),
    (-7, 6),
    (-8, -9),
    (0, 123_456),
];
/// Divide jobs of Part 2a: every sign, so that truncation toward zero shows.
const QUOTIENTS: [(i64, i64); 6] = [
    (7, 2),
    (-7, 2),
    (7, -2),
    (-7, -2),
    (999_999_999, 1_000),
    (0, 5),
];
/// Multiply jobs whose results the pipeline of Part 2b pairs: none zero, so that every Divide
/// job it makes has a divisor.
const PIPELINE_PAIRS: [(i64, i64); 6] = [(2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13)];
/// Multiply jobs of Part 3, none with a zero product, for the same reason.
const TRIPLETS: [(i64, i64, i64); 6] = [
    (2, 3, 4),
    (-2, 5, 7),
    (3, 3, 3),
    (1_000, 1_000, 1_000),
    (5, 6, 7),
    (-1, -1, -1),
];
/// Divide jobs of three numbers for Part 3.
const TRIPLET_QUOTIENTS: [(i64, i64, i64); 3] = [(100, 5, 2), (-90, 3, 5), (7, 2, 2)];
/// How many Multiply results make one Divide job: two Pairs, or three Triplets.
const PAIR_GROUP: usize = 2;
const TRIPLET_GROUP: usize = 3;

// The checks by name: the report's words, and how a caller finds a check in it.
/// Part 1: the subscription.
pub const SUBSCRIBES_MULTIPLY: &str =
    "subscribes to multiply with an address it serves and Factory.Multiply";
/// Part 1: products.
pub const MULTIPLIES: &str = "Multiply of small, large, negative and zero operands";
/// Part 1: a restart.
pub const RESTARTS: &str =
    "stopped with SIGINT and started again on the same port, it gets work again";
/// Part 1: two instances.
pub const SECOND_INSTANCE: &str = "a second instance on another port also gets work";
/// Part 1: take semantics.
pub const ONCE: &str = "no job is completed twice";
/// Part 2a: the subscription.
pub const SUBSCRIBES_DIVIDE: &str = "subscribes to divide with Factory.Divide";
/// Part 2a: quotients.
pub const DIVIDES: &str = "Divide truncates toward zero, as Go's /";
/// Part 2a: a zero divisor.
pub const ZERO_DIVISOR: &str = "a zero divisor is answered with an error";
/// Part 2b: how many Pairs the pipeline publishes.
pub const PIPELINE_COUNT: &str = "publishes one Pair to divide for every two Multiply results";
/// Part 2b: what the Pairs hold.
pub const PIPELINE_OPERANDS: &str = "each Pair's operands are two of its Multiply results";
/// Part 2b: the Pairs are worked on.
pub const PIPELINE_DONE: &str = "the Pairs it published are completed";
/// Part 3: products of three.
pub const MULTIPLIES_TRIPLETS: &str = "Multiply of a Triplet is x·y·z";
/// Part 3: the pipeline of Triplets.
pub const TRIPLET_PIPELINE: &str =
    "publishes one Triplet of its results to divide for every three Triplet results";
/// Part 3: Divide of three numbers.
pub const DIVIDES_TRIPLETS: &str = "Divide of three numbers is answered without a failure";

/// The names of the checks of `part`, in order: what a part reports when it cannot start.
fn checks_of(part: Part) -> &'static [&'static str] {
    match part {
        Part::One => &[
            SUBSCRIBES_MULTIPLY,
            MULTIPLIES,
            RESTARTS,
            SECOND_INSTANCE,
            ONCE,
        ],
        Part::TwoA => &[SUBSCRIBES_DIVIDE, DIVIDES, ZERO_DIVISOR],
        Part::TwoB => &[PIPELINE_COUNT, PIPELINE_OPERANDS, PIPELINE_DONE],
        Part::Three => &[MULTIPLIES_TRIPLETS, TRIPLET_PIPELINE, DIVIDES_TRIPLETS],
    }
}

/// Marks `part` in a session of its own: a new broker and a new factory, so that no part
/// inherits another's leftovers (a pipeline's unpaired result, a crashed process).
pub async fn mark(part: Part, args: &MarkArgs) -> PartReport {
    let mut checks = match Session::start(args).await {
        Ok(mut session) => {
            let checks = match part {
                Part::One => part_one(&mut session).await,
                Part::TwoA => part_two_a(&mut session).await,
                Part::TwoB => part_two_b(&mut session).await,
                Part::Three => part_three(&mut session).await,
            };
            session.end().await;
            checks
        }
        Err(error) => vec![Check::fail(
            checks_of(part)[0],
            "a broker for the harness",
            format!("the harness could not start its broker: {error}"),
        )],
    };
    // Every check has a line, made or not.
    for name in &checks_of(part)[checks.len()..] {
        let reason = format!("not made: {}", first_failure(&checks));
        checks.push(Check::fail(name, "the check to be made", reason));
    }
    PartReport::new(part, checks)
}

fn first_failure(checks: &[Check]) -> String {
    checks.iter().find(|check| !check.passed).map_or_else(
        || "an earlier check failed".to_owned(),
        |check| check.check.clone(),
    )
}

/// The first check of a part: the factory starts and subscribes. `None` ends the part.
async fn subscribed(
    session: &mut Session<'_>,
    checks: &mut Vec<Check>,
    check: &str,
    port: u16,
    topic: &str,
    callback: &str,
) -> Option<String> {
    let expected = format!("a subscription to {topic:?} with {callback}");
    match session.launch(port, topic, callback).await {
        Ok(seen) => {
            let address = seen.subscription.factory_address.clone();
            checks.push(Check::pass(
                check,
                expected,
                format!("{address} subscribed to {topic:?} with {callback}"),
            ));
            Some(address)
        }
        Err(seen) => {
            checks.push(Check::fail(check, expected, seen));
            None
        }
    }
}

async fn part_one(session: &mut Session<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    let port = match free_port() {
        Ok(port) => port,
        Err(seen) => return vec![Check::fail(SUBSCRIBES_MULTIPLY, "a free port", seen)],
    };
    if subscribed(
        session,
        &mut checks,
        SUBSCRIBES_MULTIPLY,
        port,
        MULTIPLY_TOPIC,
        MULTIPLY,
    )
    .await
    .is_none()
    {
        return checks;
    }
    let jobs = PRODUCTS.map(|(x, y)| Job::from(Pair { x, y }));
    checks.push(answers_check(session, MULTIPLIES, MULTIPLY_TOPIC, MULTIPLY, &jobs).await);
    checks.push(restart(session, port).await);
    checks.push(second_instance(session).await);
    checks.push(completed_once(session));
    checks
}

/// Stopped and started again on `port`, the factory completes jobs again.
async fn restart(session: &mut Session<'_>, port: u16) -> Check {
    let expected = "work done after a restart on the same port";
    let stopped = match session.stop(port).await {
        Some(Stopped::OnInterrupt(after)) => format!("it exited {after:.1?} after SIGINT"),
        Some(Stopped::Killed) => format!(
            "it was still running {:?} after SIGINT and was killed",
            session.stop_timeout()
        ),
        Some(Stopped::Earlier(exit)) => {
            return Check::fail(
                RESTARTS,
                expected,
                format!(
                    "the factory {} before it was stopped{}",
                    exit.status, exit.last_words
                ),
            )
        }
        None => return Check::fail(RESTARTS, expected, "the factory was not running"),
    };
    if let Err(seen) = session.launch(port, MULTIPLY_TOPIC, MULTIPLY).await {
        return Check::fail(
            RESTARTS,
            expected,
            format!("{stopped}; started again, {seen}"),
        );
    }
    let jobs = [
        Job::from(Pair { x: 3, y: 5 }),
        Job::from(Pair { x: 6, y: 7 }),
    ];
    let ids = match session.publish(MULTIPLY_TOPIC, &jobs).await {
        Ok(ids) => ids,
        Err(seen) => return Check::fail(RESTARTS, expected, seen),
    };
    let (answers, waited) = session.answers(MULTIPLY_TOPIC, &ids).await;
    let done = answers.iter().filter(|answer| answer.is_final()).count();
    let seen = format!(
        "{stopped}; started again on port {port}, it subscribed and answered {done} of {} jobs{}",
        ids.len(),
        unfinished(&waited)
    );
    Check::judged(RESTARTS, done == ids.len(), expected, seen)
}

/// A second instance on another port gets some of the jobs while the first still runs.
async fn second_instance(session: &mut Session<'_>) -> Check {
    /// Jobs published at a time while waiting for both instances to complete one.
    const ROUND: usize = 2;
    /// Rounds before the check gives up.
    const ROUNDS: usize = 10;
    let expected = "jobs completed by two addresses";
    let port = match free_port() {
        Ok(port) => port,
        Err(seen) => return Check::fail(SECOND_INSTANCE, expected, seen),
    };
    if let Err(seen) = session.launch(port, MULTIPLY_TOPIC, MULTIPLY).await {
        return Check::fail(
            SECOND_INSTANCE,
            expected,
            format!("the second instance: {seen}"),
        );
    }
    let since = session.journal().outcomes.len();
    let mut completed_by: HashMap<String, usize> = HashMap::new();
    let mut published = 0;
    for round in 0..ROUNDS {
        let jobs: Vec<Job> = (0..ROUND)
            .map(|n| {
                Job::from(Pair {
                    x: (round * ROUND + n) as i64 + 2,
                    y: 11,
                })
            })
            .collect();
        let ids = match session.publish(MULTIPLY_TOPIC, &jobs).await {
            Ok(ids) => ids,
            Err(seen) => return Check::fail(SECOND_INSTANCE, expected, seen),
        };
        published += ids.len();
        let (_, waited) = session.answers(MULTIPLY_TOPIC, &ids).await;
        completed_by = completions_by_factory(&session.journal().outcomes[since..]);
        if completed_by.len() >= 2 || waited != Waited::Done {
            break;
        }
    }
    let mut counts: Vec<String> = completed_by
        .iter()
        .map(|(factory, count)| format!("{factory} completed {count}"))
        .collect();
    counts.sort();
    let seen = if counts.is_empty() {
        format!("none of {published} jobs was completed")
    } else {
        format!("of {published} jobs, {}", counts.join(" and "))
    };
    Check::judged(SECOND_INSTANCE, completed_by.len() >= 2, expected, seen)
}

fn completions_by_factory(outcomes: &[Outcome]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for outcome in outcomes {
        if let Outcome::Completed { factory, .. } = outcome {
            *counts.entry(factory.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Over the whole part, every job completed at most once, and some were.
fn completed_once(session: &Session<'_>) -> Check {
    let mut times: HashMap<(String, u64), usize> = HashMap::new();
    for outcome in &session.journal().outcomes {
        if let Outcome::Completed { topic, job_id, .. } = outcome {
            *times.entry((topic.to_string(), *job_id)).or_insert(0) += 1;
        }
    }
    let mut twice: Vec<String> = times
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|((topic, id), count)| format!("job {id} of {topic:?} {count} times"))
        .collect();
    twice.sort();
    let expected = "each job completed once";
    if times.is_empty() {
        return Check::fail(ONCE, expected, "no job was completed at all");
    }
    if twice.is_empty() {
        Check::pass(
            ONCE,
            expected,
            format!("{} jobs, each completed once", times.len()),
        )
    } else {
        Check::fail(
            ONCE,
            expected,
            format!("completed twice: {}", twice.join(", ")),
        )
    }
}

async fn part_two_a(session: &mut Session<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    let Ok(port) = free_port() else {
        return vec![Check::fail(
            SUBSCRIBES_DIVIDE,
            "a free port",
            "the harness found no free port",
        )];
    };
    if subscribed(
        session,
        &mut checks,
        SUBSCRIBES_DIVIDE,
        port,
        DIVIDE_TOPIC,
        DIVIDE,
    )
    .await
    .is_none()
    {
        return checks;
    }
    let jobs = QUOTIENTS.map(|(x, y)| Job::from(Pair { x, y }));
    checks.push(answers_check(session, DIVIDES, DIVIDE_TOPIC, DIVIDE, &jobs).await);
    checks.push(zero_divisor(session).await);
    checks
}

/// A Divide by zero is answered with an error; a factory that dies of it fails.
async fn zero_divisor(session: &mut Session<'_>) -> Check {
    let expected = "an error in answer";
    let job = Job::from(Pair { x: 5, y: 0 });
    let ids = match session.publish(DIVIDE_TOPIC, &[job]).await {
        Ok(ids) => ids,
        Err(seen) => return Check::fail(ZERO_DIVISOR, expected, seen),
    };
    let (answers, waited) = session.answers(DIVIDE_TOPIC, &ids).await;
    match (&answers[0], waited) {
        (Answer::Error(error), _) => Check::pass(
            ZERO_DIVISOR,
            expected,
            format!("{DIVIDE} of {job} failed: {error}"),
        ),
        (Answer::Value { result, .. }, _) => Check::fail(
            ZERO_DIVISOR,
            expected,
            format!("{DIVIDE} of {job} is {result}"),
        ),
        (_, Waited::Exited(exit)) => Check::fail(
            ZERO_DIVISOR,
            expected,
            format!("a division by zero killed the factory: it {exit}"),
        ),
        (answer, waited) => Check::fail(ZERO_DIVISOR, expected, unanswered(answer, &waited)),
    }
}

async fn part_three(session: &mut Session<'_>) -> Vec<Check> {
    let jobs = TRIPLETS.map(|(x, y, z)| Job::from(Triplet { x, y, z }));
    // The Multiply check is the pipeline's own: its results are what the pipeline groups.
    let mut checks = Vec::new();
    let Some(_) = start_for_pipeline(session, &mut checks, MULTIPLIES_TRIPLETS).await else {
        return checks;
    };
    checks.push(
        answers_check(
            session,
            MULTIPLIES_TRIPLETS,
            MULTIPLY_TOPIC,
            MULTIPLY,
            &jobs,
        )
        .await,
    );
    let published = grouped_publishes(session, jobs.len(), TRIPLET_GROUP).await;
    let results = multiply_results(session);
    let (count_ok, count_seen) = group_count(&published, &results, TRIPLET_GROUP, "Triplet");
    let (operands_ok, operands_seen) = operands_match(&published, &results);
    checks.push(Check::judged(
        TRIPLET_PIPELINE,
        count_ok && operands_ok,
        format!(
            "{} Triplets made of the {} results",
            results.len() / TRIPLET_GROUP,
            results.len()
        ),
        format!("{count_seen}; {operands_seen}"),
    ));
    checks.push(triplet_division(session).await);
    checks
}

/// Divide of three numbers: the factory's value beside pairbroker's `(x / y) / z`, judged only
/// on being answered, as the sheet leaves its meaning to the student.
async fn triplet_division(session: &mut Session<'_>) -> Check {
    let expected = "a value for each, whatever Divide of three means to the student";
    if !subscribed_to(session, DIVIDE_TOPIC, DIVIDE) {
        return Check::fail(
            DIVIDES_TRIPLETS,
            expected,
            format!("no subscription to {DIVIDE_TOPIC:?} with {DIVIDE}"),
        );
    }
    let jobs = TRIPLET_QUOTIENTS.map(|(x, y, z)| Job::from(Triplet { x, y, z }));
    let ids = match session.publish(DIVIDE_TOPIC, &jobs).await {
        Ok(ids) => ids,
        Err(seen) => return Check::fail(DIVIDES_TRIPLETS, expected, seen),
    };
    let (answers, waited) = session.answers(DIVIDE_TOPIC, &ids).await;
    let mut all_values = true;
    let lines: Vec<String> = jobs
        .iter()
        .zip(&answers)
        .map(|(job, answer)| {
            let ours = factory::arithmetic::divide(*job)
                .map_or_else(|error| error.to_string(), |value| value.to_string());
            match answer {
                Answer::Value { result, .. } => {
                    format!("{DIVIDE} of {job} is {result} (pairbroker: {ours})")
                }
                other => {
                    all_values = false;
                    format!(
                        "{DIVIDE} of {job}: {} (pairbroker: {ours})",
                        unanswered(other, &waited)
                    )
                }
            }
        })
        .collect();
    Check::judged(DIVIDES_TRIPLETS, all_values, expected, lines.join("; "))
}

/// Part 2b: with only Multiply jobs published, the pipeline's Pairs, in three checks.
async fn part_two_b(session: &mut Session<'_>) -> Vec<Check> {
    let jobs = PIPELINE_PAIRS.map(|(x, y)| Job::from(Pair { x, y }));
    let mut checks = Vec::new();
    let Some(_) = start_for_pipeline(session, &mut checks, PIPELINE_COUNT).await else {
        return checks;
    };
    let ids = match session.publish(MULTIPLY_TOPIC, &jobs).await {
        Ok(ids) => ids,
        Err(seen) => {
            checks.push(Check::fail(
                PIPELINE_COUNT,
                "the harness's jobs published",
                seen,
            ));
            return checks;
        }
    };
    session.answers(MULTIPLY_TOPIC, &ids).await;
    let published = grouped_publishes(session, jobs.len(), PAIR_GROUP).await;
    let results = multiply_results(session);
    let (count_ok, count_seen) = group_count(&published, &results, PAIR_GROUP, "Pair");
    checks.push(Check::judged(
        PIPELINE_COUNT,
        count_ok,
        format!(
            "{} Pairs on divide after {} Multiply results",
            results.len() / PAIR_GROUP,
            results.len()
        ),
        count_seen,
    ));
    let (operands_ok, operands_seen) = operands_match(&published, &results);
    checks.push(Check::judged(
        PIPELINE_OPERANDS,
        operands_ok,
        "the Multiply results, each in one Pair",
        operands_seen,
    ));
    checks.push(pipeline_done(session, &published).await);
    checks
}

/// Starts the factory for a pipeline part: its subscription to multiply, and to divide if it
/// makes one within a check's deadline (without it, the Divide jobs wait, which a later check
/// reports).
async fn start_for_pipeline(
    session: &mut Session<'_>,
    checks: &mut Vec<Check>,
    first_check: &str,
) -> Option<()> {
    let port = match free_port() {
        Ok(port) => port,
        Err(seen) => {
            checks.push(Check::fail(first_check, "a free port", seen));
            return None;
        }
    };
    if let Err(seen) = session.launch(port, MULTIPLY_TOPIC, MULTIPLY).await {
        checks.push(Check::fail(
            first_check,
            "a subscription to \"multiply\"",
            seen,
        ));
        return None;
    }
    let within = session.check_timeout();
    let _ = session
        .subscription_since(0, DIVIDE_TOPIC, DIVIDE, within)
        .await;
    Some(())
}

fn subscribed_to(session: &Session<'_>, topic: &str, callback: &str) -> bool {
    session.journal().subscribes.iter().any(|seen| {
        seen.refusal.is_none()
            && seen.subscription.topic == topic
            && seen.subscription.callback == callback
    })
}

/// The values the factory returned for the harness's Multiply jobs, in the order they came
/// back: what its pipeline must group.
fn multiply_results(session: &Session<'_>) -> Vec<i64> {
    session
        .journal()
        .outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::Completed {
                topic,
                job_id,
                result,
                ..
            } if **topic == *MULTIPLY_TOPIC && session.is_own(topic, *job_id) => Some(*result),
            _ => None,
        })
        .collect()
}

/// Waits for the factory's Divide jobs from `jobs` Multiply results in groups of `group`,
/// then a moment more, so that a factory that publishes too many is seen doing it.
async fn grouped_publishes(
    session: &mut Session<'_>,
    jobs: usize,
    group: usize,
) -> Vec<(u64, Job)> {
    /// How long the harness watches for publishes past the expected count.
    const GRACE: std::time::Duration = std::time::Duration::from_millis(300);
    let want = jobs / group;
    let within = session.check_timeout();
    let count = |session: &Session<'_>| session.published_by_factory(DIVIDE_TOPIC).len();
    let deadline = tokio::time::Instant::now() + within;
    while count(session) < want && tokio::time::Instant::now() < deadline {
        if session.any_exited().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tokio::time::sleep(GRACE).await;
    session.published_by_factory(DIVIDE_TOPIC)
}

/// Whether `published` holds one job of the right shape for every `group` results.
fn group_count(
    published: &[(u64, Job)],
    results: &[i64],
    group: usize,
    shape: &str,
) -> (bool, String) {
    let want = results.len() / group;
    let of_shape = published
        .iter()
        .filter(|(_, job)| {
            matches!(
                (job, group),
                (Job::Pair(_), PAIR_GROUP) | (Job::Triplet(_), TRIPLET_GROUP)
            )
        })
        .count();
    let seen = if published.is_empty() {
        format!(
            "nothing was published to divide after {} Multiply results",
            results.len()
        )
    } else if of_shape == published.len() {
        format!(
            "{} {shape}s published to divide after {} Multiply results",
            published.len(),
            results.len()
        )
    } else {
        format!(
            "{} jobs published to divide after {} Multiply results, {} of them not a {shape}",
            published.len(),
            results.len(),
            published.len() - of_shape
        )
    };
    (
        want > 0 && published.len() == want && of_shape == want,
        seen,
    )
}

/// Whether the operands of the published jobs are the results, each used once.
fn operands_match(published: &[(u64, Job)], results: &[i64]) -> (bool, String) {
    if published.is_empty() {
        return (false, "no job was published to divide".to_owned());
    }
    let mut left: HashMap<i64, usize> = HashMap::new();
    for result in results {
        *left.entry(*result).or_insert(0) += 1;
    }
    let mut strangers = Vec::new();
    for (_, job) in published {
        for operand in operands(job) {
            match left.get_mut(&operand) {
                Some(count) if *count > 0 => *count -= 1,
                _ => strangers.push(operand),
            }
        }
    }
    let jobs: Vec<String> = published
        .iter()
        .map(|(_, job)| format!("({job})"))
        .collect();
    if strangers.is_empty() {
        (
            true,
            format!(
                "published {}, each operand a Multiply result",
                jobs.join(", ")
            ),
        )
    } else {
        (
            false,
            format!(
                "published {}; not among the Multiply results {results:?}: {strangers:?}",
                jobs.join(", ")
            ),
        )
    }
}

fn operands(job: &Job) -> Vec<i64> {
    match *job {
        Job::Pair(Pair { x, y }) => vec![x, y],
        Job::Triplet(Triplet { x, y, z }) => vec![x, y, z],
    }
}

/// The factory's Divide jobs are completed.
async fn pipeline_done(session: &mut Session<'_>, published: &[(u64, Job)]) -> Check {
    let expected = "each Pair it published completed";
    if published.is_empty() {
        return Check::fail(PIPELINE_DONE, expected, "no Pair was published");
    }
    let ids: Vec<u64> = published.iter().map(|(id, _)| *id).collect();
    let (answers, waited) = session.answers(DIVIDE_TOPIC, &ids).await;
    let done = answers
        .iter()
        .filter(|answer| matches!(answer, Answer::Value { .. }))
        .count();
    let mut seen = format!("{done} of {} completed", ids.len());
    if done < ids.len() {
        if !subscribed_to(session, DIVIDE_TOPIC, DIVIDE) {
            seen.push_str(&format!(
                " (no subscription to {DIVIDE_TOPIC:?} with {DIVIDE})"
            ));
        } else if let Some(answer) = answers
            .iter()
            .find(|answer| !matches!(answer, Answer::Value { .. }))
        {
            seen.push_str(&format!(" ({})", unanswered(answer, &waited)));
        }
    }
    Check::judged(PIPELINE_DONE, done == ids.len(), expected, seen)
}

/// Publishes `jobs` to `topic` and checks each answer against pairbroker's arithmetic.
async fn answers_check(
    session: &mut Session<'_>,
    check: &str,
    topic: &str,
    callback: &str,
    jobs: &[Job],
) -> Check {
    let expected = format!("the right value for each of {} jobs", jobs.len());
    let ids = match session.publish(topic, jobs).await {
        Ok(ids) => ids,
        Err(seen) => return Check::fail(check, expected, seen),
    };
    let (answers, waited) = session.answers(topic, &ids).await;
    let mut wrong = Vec::new();
    for (job, answer) in jobs.iter().zip(&answers) {
        let right = if callback == DIVIDE {
            factory::arithmetic::divide(*job)
        } else {
            factory::arithmetic::multiply(*job)
        };
        let right = right.map_or_else(|error| error.to_string(), |value| value.to_string());
        let got = match answer {
            Answer::Value { result, .. } if result.to_string() == right => continue,
            Answer::Value { result, .. } => result.to_string(),
            Answer::Error(error) => format!("the error {error:?}"),
            other => unanswered(other, &waited),
        };
        wrong.push(format!("{callback} of {job}: expected {right}, got {got}"));
    }
    if wrong.is_empty() {
        Check::pass(
            check,
            expected,
            format!("{} of {} right", jobs.len(), jobs.len()),
        )
    } else {
        Check::fail(check, expected, wrong.join("; "))
    }
}

/// Why a job has no answer.
fn unanswered(answer: &Answer, waited: &Waited) -> String {
    match (answer, waited) {
        (Answer::CallFailed(reason), _) => format!("no answer: the call failed ({reason})"),
        (_, Waited::Exited(exit)) => format!("no answer: the factory {exit}"),
        (_, Waited::TimedOut(within)) => format!("no answer within {within:?}"),
        _ => "no answer".to_owned(),
    }
}

/// `, and the rest got no answer within 5s`, or nothing when every job was answered.
fn unfinished(waited: &Waited) -> String {
    match waited {
        Waited::Done => String::new(),
        Waited::Exited(exit) => format!(" (the factory {exit})"),
        Waited::TimedOut(within) => format!(" (the rest no answer within {within:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_match_when_each_result_is_used_once_in_any_order() {
        let published = vec![
            (1, Job::from(Pair { x: 20, y: 6 })),
            (2, Job::from(Pair { x: 42, y: 72 })),
        ];
        assert!(operands_match(&published, &[6, 20, 42, 72]).0);
        let (ok, seen) = operands_match(&published, &[6, 20, 42, 73]);
        assert!(!ok);
        assert!(seen.contains("[72]"), "{seen}");
        assert!(!operands_match(&[], &[6, 20]).0);
    }

    #[test]
    fn the_count_wants_one_job_of_the_shape_per_group() {
        let pair = (1, Job::from(Pair { x: 1, y: 2 }));
        let triplet = (2, Job::from(Triplet { x: 1, y: 2, z: 3 }));
        assert!(group_count(&[pair], &[1, 2], PAIR_GROUP, "Pair").0);
        assert!(!group_count(&[pair, pair], &[1, 2], PAIR_GROUP, "Pair").0);
        assert!(!group_count(&[triplet], &[1, 2], PAIR_GROUP, "Pair").0);
        assert!(group_count(&[triplet], &[1, 2, 3], TRIPLET_GROUP, "Triplet").0);
        assert!(!group_count(&[], &[], PAIR_GROUP, "Pair").0);
    }
}
