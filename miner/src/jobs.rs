//! Random jobs, reproducible from a seed.

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
}
