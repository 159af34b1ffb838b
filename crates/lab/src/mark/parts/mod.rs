//! The checks of each part of the lab sheet, each judged by what the harness's broker sees.
//!
//! - `one`: Part 1, Multiply, restarts and a second instance.
//! - `two_a`: Part 2a, Divide.
//! - `pipeline`: Part 2b, the pipeline's Pairs, and Part 3, Triplets grouped in threes.

mod one;
mod pipeline;
mod two_a;

use stubs::{Job, DIVIDE};

use super::report::{Check, Part, PartReport};
use super::session::{free_port, Answer, Session, Waited};
use super::MarkArgs;

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
                Part::One => one::part_one(&mut session).await,
                Part::TwoA => two_a::part_two_a(&mut session).await,
                Part::TwoB => pipeline::part_two_b(&mut session).await,
                Part::Three => pipeline::part_three(&mut session).await,
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

/// A free port for the factory, or a failed `check` that ends the part.
fn port_for(checks: &mut Vec<Check>, check: &str) -> Option<u16> {
    match free_port() {
        Ok(port) => Some(port),
        Err(seen) => {
            checks.push(Check::fail(check, "a free port", seen));
            None
        }
    }
}

/// The first check of a part: the factory starts on a free port, its port, and subscribes.
/// `None` ends the part.
async fn subscribed(
    session: &mut Session<'_>,
    checks: &mut Vec<Check>,
    check: &str,
    topic: &str,
    callback: &str,
) -> Option<u16> {
    let port = port_for(checks, check)?;
    let expected = format!("a subscription to {topic:?} with {callback}");
    match session.launch(port, topic, callback).await {
        Ok(seen) => {
            let address = &seen.subscription.factory_address;
            checks.push(Check::pass(
                check,
                expected,
                format!("{address} subscribed to {topic:?} with {callback}"),
            ));
            Some(port)
        }
        Err(seen) => {
            checks.push(Check::fail(check, expected, seen));
            None
        }
    }
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
