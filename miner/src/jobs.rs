//! Jobs: random ones, reproducible from a seed, and ones written out on the command line
//! (`12,34`).

use std::num::IntErrorKind;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stubs::{Job, Pair, Triplet};

/// The largest random integer of a Pair by default, as in the lab.
pub const DEFAULT_MAX_PAIR: i64 = 999_999_999;
/// The largest random integer of a Triplet by default: the cube of 999,999 still fits an i64,
/// so the product of a Triplet never overflows.
pub const DEFAULT_MAX_TRIPLET: i64 = 999_999;

/// Draws jobs with operands from 1 to `max`. Zero is left out so that a random job never
/// divides by zero; the factory's handling of zero is tested with jobs made on purpose.
#[derive(Debug)]
pub struct JobSource {
    triplets: bool,
    max: i64,
    random: StdRng,
}

impl JobSource {
    /// A source of Pairs or Triplets up to `max`, seeded with `seed` or from the system.
    pub fn new(triplets: bool, max: i64, seed: Option<u64>) -> Result<Self, String> {
        if max < 1 {
            return Err(format!("--max must be at least 1, not {max}"));
        }
        let random = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Ok(Self {
            triplets,
            max,
            random,
        })
    }

    /// The next job.
    pub fn next_job(&mut self) -> Job {
        let mut operand = || self.random.random_range(1..=self.max);
        if self.triplets {
            Triplet {
                x: operand(),
                y: operand(),
                z: operand(),
            }
            .into()
        } else {
            Pair {
                x: operand(),
                y: operand(),
            }
            .into()
        }
    }
}

/// What a written job looks like, said with every refusal so that one line is enough to fix it.
const JOB_SHAPE: &str =
    "a job is two integers (a Pair) or three (a Triplet) separated by commas, e.g. 12,34 or 0,-7,2";

/// Why a written job was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobSyntaxError {
    /// Fewer than two operands or more than three.
    #[error("{JOB_SHAPE}")]
    Operands {
        /// How many operands were given.
        count: usize,
    },
    /// An operand is not an integer.
    #[error("'{operand}' is not an integer; {JOB_SHAPE}")]
    NotAnInteger {
        /// The operand as written.
        operand: String,
    },
    /// An operand does not fit the 64-bit integers the factory computes with.
    #[error("{operand} does not fit a 64-bit integer ({min} to {max}); {JOB_SHAPE}", min = i64::MIN, max = i64::MAX)]
    OutOfRange {
        /// The operand as written.
        operand: String,
    },
}

/// Reads a job written as `x,y` (a Pair) or `x,y,z` (a Triplet). Any integer is taken, zero and
/// negative ones included: such jobs are chosen, often to see how the factory handles them.
pub fn parse_job(text: &str) -> Result<Job, JobSyntaxError> {
    let operands: Vec<&str> = text.split(',').map(str::trim).collect();
    match operands.as_slice() {
        [x, y] => Ok(Pair {
            x: parse_operand(x)?,
            y: parse_operand(y)?,
        }
        .into()),
        [x, y, z] => Ok(Triplet {
            x: parse_operand(x)?,
            y: parse_operand(y)?,
            z: parse_operand(z)?,
        }
        .into()),
        _ => Err(JobSyntaxError::Operands {
            count: operands.len(),
        }),
    }
}

fn parse_operand(operand: &str) -> Result<i64, JobSyntaxError> {
    operand.parse().map_err(|error: std::num::ParseIntError| {
        let operand = operand.to_owned();
        match error.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => {
                JobSyntaxError::OutOfRange { operand }
            }
            _ => JobSyntaxError::NotAnInteger { operand },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_jobs() {
        let mut a = JobSource::new(false, DEFAULT_MAX_PAIR, Some(7)).unwrap();
        let mut b = JobSource::new(false, DEFAULT_MAX_PAIR, Some(7)).unwrap();
        let jobs_a: Vec<_> = (0..100).map(|_| a.next_job()).collect();
        let jobs_b: Vec<_> = (0..100).map(|_| b.next_job()).collect();
        assert_eq!(jobs_a, jobs_b);
    }

    #[test]
    fn operands_stay_within_bounds() {
        let mut source = JobSource::new(true, 3, Some(1)).unwrap();
        for _ in 0..1_000 {
            let Job::Triplet(Triplet { x, y, z }) = source.next_job() else {
                panic!("expected a triplet");
            };
            assert!([x, y, z].iter().all(|v| (1..=3).contains(v)));
        }
    }

    #[test]
    fn max_below_one_is_refused() {
        assert!(JobSource::new(false, 0, None).is_err());
    }

    #[test]
    fn two_integers_are_a_pair_and_three_a_triplet() {
        assert_eq!(parse_job("12,34"), Ok(Pair { x: 12, y: 34 }.into()));
        assert_eq!(parse_job("1,2,3"), Ok(Triplet { x: 1, y: 2, z: 3 }.into()));
    }

    #[test]
    fn zero_and_negative_operands_are_taken() {
        assert_eq!(parse_job("-5,3"), Ok(Pair { x: -5, y: 3 }.into()));
        assert_eq!(parse_job("5,0"), Ok(Pair { x: 5, y: 0 }.into()));
        assert_eq!(
            parse_job("0,-7,2"),
            Ok(Triplet { x: 0, y: -7, z: 2 }.into())
        );
        assert_eq!(
            parse_job(&format!("{},{}", i64::MIN, i64::MAX)),
            Ok(Pair {
                x: i64::MIN,
                y: i64::MAX
            }
            .into())
        );
    }

    #[test]
    fn spaces_around_operands_are_ignored() {
        assert_eq!(parse_job(" 12 , 34 "), Ok(Pair { x: 12, y: 34 }.into()));
    }

    #[test]
    fn too_few_or_too_many_operands_are_refused() {
        for (text, count) in [("1", 1), ("", 1), ("1,2,3,4", 4), ("1,2,3,4,x", 5)] {
            assert_eq!(
                parse_job(text),
                Err(JobSyntaxError::Operands { count }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn an_operand_that_is_not_an_integer_is_refused() {
        for (text, operand) in [("a,b", "a"), ("1,2.5", "2.5"), ("1,", ""), ("1,,2", "")] {
            assert_eq!(
                parse_job(text),
                Err(JobSyntaxError::NotAnInteger {
                    operand: operand.into()
                }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn an_operand_beyond_64_bits_is_refused() {
        assert_eq!(
            parse_job("99999999999999999999,1"),
            Err(JobSyntaxError::OutOfRange {
                operand: "99999999999999999999".into()
            })
        );
        assert_eq!(
            parse_job("1,2,-99999999999999999999"),
            Err(JobSyntaxError::OutOfRange {
                operand: "-99999999999999999999".into()
            })
        );
    }

    #[test]
    fn every_refusal_says_what_a_job_looks_like() {
        for text in ["1", "a,b", "99999999999999999999,1"] {
            let message = parse_job(text).unwrap_err().to_string();
            assert!(message.contains("12,34"), "{message}");
            assert_eq!(message.lines().count(), 1, "{message}");
        }
    }
}
