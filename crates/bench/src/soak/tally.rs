//! Job by job, from the programs' own lines: which jobs the miner got acknowledged, and how
//! often the broker saw each completed.

use std::collections::HashMap;

use super::SoakReport;

/// Counts the jobs the miner's `output` says were acknowledged against the completions the
/// broker's `output` reports.
pub(super) fn count(miner: &str, broker: &str) -> SoakReport {
    let acknowledged = jobs_acknowledged(miner);
    let mut times: HashMap<(i64, i64), u64> = HashMap::new();
    for job in jobs_completed(broker) {
        *times.entry(job).or_default() += 1;
    }
    let lost = acknowledged
        .iter()
        .filter(|job| !times.contains_key(job))
        .count() as u64;
    let duplicates = acknowledged
        .iter()
        .filter_map(|job| times.get(job))
        .map(|times| times - 1)
        .sum();
    SoakReport {
        published: acknowledged.len() as u64,
        completed: acknowledged.len() as u64 - lost,
        lost,
        duplicates,
    }
}

/// The jobs the miner printed as acknowledged: `published X and Y to TOPIC (job N)`.
fn jobs_acknowledged(output: &str) -> Vec<(i64, i64)> {
    output
        .lines()
        .filter_map(|line| {
            let (operands, _) = line.strip_prefix("published ")?.split_once(" to ")?;
            let (x, y) = operands.split_once(" and ")?;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}

/// The jobs the broker printed as completed: `Factory.Multiply of X and Y is P`.
fn jobs_completed(output: &str) -> Vec<(i64, i64)> {
    output
        .lines()
        .filter_map(|line| {
            let (operands, _) = line
                .strip_prefix("Factory.Multiply of ")?
                .split_once(" is ")?;
            let (x, y) = operands.split_once(" and ")?;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_read_from_the_miner_and_the_broker_lines() {
        let miner = "published 12 and 34 to multiply (job 0)\nsomething else\n";
        assert_eq!(jobs_acknowledged(miner), vec![(12, 34)]);
        let broker = "Factory.Multiply of 12 and 34 is 408\nFactory.Divide of 1 and 2 is 0\n";
        assert_eq!(jobs_completed(broker), vec![(12, 34)]);
    }
}
