//! Part 1: the factory subscribes to multiply, multiplies, comes back after a restart, shares
//! the work with a second instance, and never completes a job twice.

use std::collections::HashMap;

use broker::Outcome;
use stubs::{Job, Pair, MULTIPLY, MULTIPLY_TOPIC};

use super::{answers_check, subscribed, unfinished, Check};
use super::{MULTIPLIES, ONCE, RESTARTS, SECOND_INSTANCE, SUBSCRIBES_MULTIPLY};
use crate::mark::process::Stopped;
use crate::mark::session::{free_port, Session, Waited};

/// Multiply jobs of Part 1: small, large, negative and zero operands.
const PRODUCTS: [(i64, i64); 5] = [
    (12, 34),
    (999_999_999, 999_999_999),
    (-7, 6),
    (-8, -9),
    (0, 123_456),
];

pub(super) async fn part_one(session: &mut Session<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    let topic = MULTIPLY_TOPIC;
    let subscribes = SUBSCRIBES_MULTIPLY;
    let Some(port) = subscribed(session, &mut checks, subscribes, topic, MULTIPLY).await else {
        return checks;
    };
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
