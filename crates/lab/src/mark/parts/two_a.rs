//! Part 2a: the factory subscribes to divide, truncates toward zero, and answers a zero
//! divisor with an error rather than dying of it.

use stubs::{Job, Pair, DIVIDE, DIVIDE_TOPIC};

use super::{answers_check, subscribed, unanswered, Check};
use super::{DIVIDES, SUBSCRIBES_DIVIDE, ZERO_DIVISOR};
use crate::mark::session::{Answer, Session, Waited};

/// Divide jobs of Part 2a: every sign, so that truncation toward zero shows.
const QUOTIENTS: [(i64, i64); 6] = [
    (7, 2),
    (-7, 2),
    (7, -2),
    (-7, -2),
    (999_999_999, 1_000),
    (0, 5),
];

pub(super) async fn part_two_a(session: &mut Session<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    let subscribes = SUBSCRIBES_DIVIDE;
    if subscribed(session, &mut checks, subscribes, DIVIDE_TOPIC, DIVIDE)
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
