//! The factory's two operations, in checked arithmetic: an overflow or a zero divisor is a
//! [`JobError`], never a panic nor a wrapped value.

use stubs::{Job, JobError, Pair, Triplet};

/// `x * y`, or `x * y * z`.
pub fn multiply(job: Job) -> Result<i64, JobError> {
    let product = match job {
        Job::Pair(Pair { x, y }) => x.checked_mul(y),
        Job::Triplet(Triplet { x, y, z }) => x.checked_mul(y).and_then(|xy| xy.checked_mul(z)),
    };
    product.ok_or(JobError::Overflow)
}

/// `x / y`, or `(x / y) / z` for a Triplet, truncating toward zero as Go's `/` does.
pub fn divide(job: Job) -> Result<i64, JobError> {
    match job {
        Job::Pair(Pair { x, y }) => checked_div(x, y),
        Job::Triplet(Triplet { x, y, z }) => {
            // Every divisor is checked before dividing, so that `5 / 0 / 0` and `0 / 5 / 0`
            // both fail as divisions by zero rather than one of them as something else.
            if y == 0 || z == 0 {
                return Err(JobError::DivideByZero);
            }
            checked_div(checked_div(x, y)?, z)
        }
    }
}

fn checked_div(x: i64, y: i64) -> Result<i64, JobError> {
    if y == 0 {
        return Err(JobError::DivideByZero);
    }
    // The one quotient that does not fit: i64::MIN / -1.
    x.checked_div(y).ok_or(JobError::Overflow)
}

/// The operation as the factory prints it, e.g. `12 * 34` or `(100 / 5) / 2`.
pub fn describe(operator: char, job: Job) -> String {
    match job {
        Job::Pair(Pair { x, y }) => format!("{x} {operator} {y}"),
        Job::Triplet(Triplet { x, y, z }) if operator == '/' => format!("({x} / {y}) / {z}"),
        Job::Triplet(Triplet { x, y, z }) => format!("{x} {operator} {y} {operator} {z}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(x: i64, y: i64) -> Job {
        Pair { x, y }.into()
    }

    fn triplet(x: i64, y: i64, z: i64) -> Job {
        Triplet { x, y, z }.into()
    }

    #[test]
    fn multiplies() {
        assert_eq!(multiply(pair(12, 34)), Ok(408));
        assert_eq!(multiply(triplet(1, 2, 3)), Ok(6));
        assert_eq!(multiply(pair(-7, 6)), Ok(-42));
        assert_eq!(
            multiply(triplet(999_999, 999_999, 999_999)),
            Ok(999_997_000_002_999_999)
        );
    }

    #[test]
    fn multiplication_overflow_is_an_error() {
        assert_eq!(multiply(pair(i64::MAX, 2)), Err(JobError::Overflow));
        assert_eq!(
            multiply(triplet(1 << 40, 1 << 20, 1 << 10)),
            Err(JobError::Overflow)
        );
        assert_eq!(multiply(pair(i64::MIN, -1)), Err(JobError::Overflow));
    }

    #[test]
    fn divides_truncating_toward_zero() {
        assert_eq!(divide(pair(408, 12)), Ok(34));
        assert_eq!(divide(pair(7, 2)), Ok(3));
        assert_eq!(divide(pair(-7, 2)), Ok(-3));
        assert_eq!(divide(pair(7, -2)), Ok(-3));
        assert_eq!(divide(triplet(100, 5, 2)), Ok(10));
        assert_eq!(divide(triplet(100, 7, 3)), Ok(4));
    }

    #[test]
    fn division_errors() {
        assert_eq!(divide(pair(5, 0)), Err(JobError::DivideByZero));
        assert_eq!(divide(triplet(5, 0, 1)), Err(JobError::DivideByZero));
        assert_eq!(divide(triplet(0, 5, 0)), Err(JobError::DivideByZero));
        assert_eq!(divide(pair(i64::MIN, -1)), Err(JobError::Overflow));
        assert_eq!(divide(triplet(i64::MIN, -1, 1)), Err(JobError::Overflow));
    }

    #[test]
    fn descriptions() {
        assert_eq!(describe('*', pair(12, 34)), "12 * 34");
        assert_eq!(describe('*', triplet(1, 2, 3)), "1 * 2 * 3");
        assert_eq!(describe('/', triplet(100, 5, 2)), "(100 / 5) / 2");
    }
}
