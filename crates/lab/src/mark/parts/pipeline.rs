//! The pipeline's parts, judged by the Divide jobs the factory publishes from its own Multiply
//! results: Part 2b groups them in Pairs, Part 3 in Triplets.

use std::collections::HashMap;

use broker::Outcome;
use stubs::{Job, Pair, Triplet, DIVIDE, DIVIDE_TOPIC, MULTIPLY, MULTIPLY_TOPIC};

use super::{answers_check, port_for, unanswered, Check};
use super::{
    DIVIDES_TRIPLETS, MULTIPLIES_TRIPLETS, PIPELINE_COUNT, PIPELINE_DONE, PIPELINE_OPERANDS,
    TRIPLET_PIPELINE,
};
use crate::mark::session::{Answer, Session};

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

/// Part 2b: with only Multiply jobs published, the pipeline's Pairs, in three checks.
pub(super) async fn part_two_b(session: &mut Session<'_>) -> Vec<Check> {
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

pub(super) async fn part_three(session: &mut Session<'_>) -> Vec<Check> {
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

/// Starts the factory for a pipeline part: its subscription to multiply, and to divide if it
/// makes one within a check's deadline (without it, the Divide jobs wait, which a later check
/// reports).
async fn start_for_pipeline(
    session: &mut Session<'_>,
    checks: &mut Vec<Check>,
    first_check: &str,
) -> Option<()> {
    let port = port_for(checks, first_check)?;
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

#[cfg(test)]
mod tests;
