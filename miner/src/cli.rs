//! The `miner` program's command line.

use clap::Parser;
use lab_console::usage::{at_least, duration, from_to};
use stubs::Job;

use crate::jobs::{parse_job, DEFAULT_MAX_PAIR, DEFAULT_MAX_TRIPLET};
use crate::MinerConfig;

/// The buffer of the topic the lab's miner creates.
pub const DEFAULT_BUFFER: u32 = 10;
/// The pause between two jobs in the lab.
pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

const EXAMPLES: &str = "\
Examples:
  cargo run -p miner                                   # a random Pair to multiply every second
  cargo run -p miner -- --topic divide                 # Part 2a
  cargo run -p miner -- --triplets                     # Part 3
  cargo run -p miner -- --interval 0 --count 10000 --concurrency 8   # load
  cargo run -p miner -- --rate 5000 --concurrency 16 --quiet          # 5,000 jobs/s, no output
  cargo run -p miner -- --seed 42 --count 5            # the same five jobs every time
  cargo run -p miner -- --topic divide --job 5,0 --job 12,-4   # these two jobs, then exit";

/// A pairbroker miner: creates a topic and publishes random Pairs (or Triplets) to it, or the
/// jobs given with --job.
#[derive(Debug, Clone, Parser)]
#[command(name = "miner", version, after_help = EXAMPLES)]
pub struct Cli {
    /// How to reach the broker.
    #[command(flatten)]
    pub broker: lab_console::BrokerArgs,
    /// The topic to publish to.
    ///
    /// The miner creates it if the broker does not hold it yet. The lab's topics are `multiply`
    /// and `divide`.
    #[arg(long, value_name = "TOPIC", default_value = stubs::MULTIPLY_TOPIC, help_heading = "Jobs")]
    pub topic: String,
    /// The buffer of the topic, if this miner creates it.
    ///
    /// How many ready jobs the topic holds at most; a publish to a full topic waits for room.
    /// 1 or more.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BUFFER, allow_negative_numbers = true, value_parser = at_least("the buffer", 1u32), help_heading = "Jobs")]
    pub buffer: u32,
    /// How many jobs to publish in all.
    ///
    /// Without it, publish until stopped.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least("the count", 0u64), help_heading = "Jobs")]
    pub count: Option<u64>,
    /// Publish Triplets instead of Pairs (Part 3).
    ///
    /// Three random integers a job instead of two.
    #[arg(long, help_heading = "Jobs")]
    pub triplets: bool,
    /// The largest random integer [default: 999999999 for Pairs, 999999 for Triplets].
    ///
    /// 1 or more.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least("the largest operand", 1i64), help_heading = "Jobs")]
    pub max: Option<i64>,
    /// Seed the random jobs, for a reproducible sequence.
    ///
    /// The same seed gives the same jobs, in the same order, every time.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least("the seed", 0u64), help_heading = "Jobs")]
    pub seed: Option<u64>,
    /// Publish this job instead of random ones, then exit.
    ///
    /// Two integers for a Pair or three for a Triplet, separated by commas (e.g. `12,34`,
    /// `5,0`, `0,-7,2`). Repeat it for several jobs; they are published in the order given.
    #[arg(
        long = "job",
        value_name = "X,Y[,Z]",
        value_parser = parse_job,
        // A job may start with a negative operand, which clap would take for an option.
        allow_hyphen_values = true,
        conflicts_with_all = ["count", "rate", "triplets", "max", "seed", "interval", "concurrency"],
        help_heading = "Jobs",
    )]
    pub jobs: Vec<Job>,
    /// The pause between two jobs of one publisher.
    ///
    /// A duration with its unit (e.g. `1s`, `10ms`: a number needs a unit); `0` publishes as
    /// fast as the broker takes them.
    #[arg(long, value_name = "DURATION", default_value_t = DEFAULT_INTERVAL.into(), allow_negative_numbers = true, value_parser = duration, help_heading = "Pace")]
    pub interval: humantime::Duration,
    /// Publish this many jobs per second in all; replaces --interval.
    ///
    /// On a fixed schedule shared by the publishers: raise --concurrency so that they keep up.
    /// From 1 to 10000000.
    #[arg(long, value_name = "N", conflicts_with = "interval", allow_negative_numbers = true, value_parser = from_to("the rate", 1u32, 10_000_000), help_heading = "Pace")]
    pub rate: Option<u32>,
    /// How many publishers run at once, for load.
    ///
    /// From 1 to 256. Their jobs travel to the broker together, in batches.
    #[arg(long, value_name = "N", default_value_t = 1, allow_negative_numbers = true, value_parser = from_to("the concurrency", 1u32, 256), help_heading = "Pace")]
    pub concurrency: u32,
    /// Print nothing per job.
    ///
    /// A summary at the end still goes to the log.
    #[arg(long, help_heading = "Output")]
    pub quiet: bool,
    /// How logs are written to standard error.
    ///
    /// `text`, one readable line per event; `json`, one object per event, for log collectors.
    /// `RUST_LOG` chooses which events.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = lab_console::LogFormat::Text, help_heading = "Output")]
    pub log_format: lab_console::LogFormat,
}

impl Cli {
    /// What the miner does: an error when its TLS files cannot be used.
    pub fn config(&self) -> Result<MinerConfig, transport::TlsError> {
        let default_max = if self.triplets {
            DEFAULT_MAX_TRIPLET
        } else {
            DEFAULT_MAX_PAIR
        };
        Ok(MinerConfig {
            link: self.broker.link()?,
            topic: self.topic.clone(),
            buffer: self.buffer,
            interval: self.interval.into(),
            rate: self.rate,
            count: self.count,
            triplets: self.triplets,
            max: self.max.unwrap_or(default_max),
            seed: self.seed,
            concurrency: self.concurrency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::Parser;
    use stubs::{Pair, Triplet};

    #[test]
    fn broker_takes_one_address_or_several_separated_by_commas() {
        let one = Cli::try_parse_from(["miner"]).unwrap().config().unwrap();
        assert_eq!(one.link.brokers, vec![lab_console::DEFAULT_BROKER]);
        let two = Cli::try_parse_from(["miner", "--broker", "127.0.0.1:8030,127.0.0.1:8040"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(two.link.brokers, vec!["127.0.0.1:8030", "127.0.0.1:8040"]);
    }

    #[test]
    fn wait_for_broker_is_a_duration_with_its_unit_and_none_unless_given() {
        let link = |args: &[&str]| {
            Cli::try_parse_from([&["miner"], args].concat())
                .map(|cli| cli.config().expect("no TLS files").link.wait_for_broker)
        };
        assert_eq!(link(&[]).unwrap(), std::time::Duration::ZERO);
        assert_eq!(
            link(&["--wait-for-broker", "90s"]).unwrap(),
            std::time::Duration::from_secs(90)
        );
        for wrong in ["60", "-1s"] {
            assert!(link(&["--wait-for-broker", wrong]).is_err(), "{wrong}");
        }
    }

    #[test]
    fn jobs_are_kept_in_the_order_given_negative_operands_included() {
        let cli = Cli::try_parse_from([
            "miner", "--job", "12,34", "--job", "-5,3", "--job", "0,-7,2",
        ])
        .unwrap();
        assert_eq!(
            cli.jobs,
            [
                Pair { x: 12, y: 34 }.into(),
                Pair { x: -5, y: 3 }.into(),
                Job::from(Triplet { x: 0, y: -7, z: 2 }),
            ]
        );
    }

    #[test]
    fn a_bad_job_is_a_usage_error_that_says_what_a_job_looks_like() {
        for job in ["1", "1,2,3,4", "a,b", "99999999999999999999,1"] {
            let error = Cli::try_parse_from(["miner", "--job", job]).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{job}");
            assert!(error.to_string().contains("12,34"), "{job}: {error}");
        }
    }

    #[test]
    fn jobs_conflict_with_the_random_job_options() {
        for option in [
            &["--count", "3"][..],
            &["--rate", "5"],
            &["--triplets"],
            &["--max", "9"],
            &["--seed", "1"],
            &["--interval", "0"],
            &["--concurrency", "2"],
        ] {
            let args = ["miner", "--job", "1,2"].iter().chain(option);
            let error = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ArgumentConflict, "{option:?}");
        }
    }

    #[test]
    fn a_negative_number_is_out_of_range_rather_than_an_unknown_option() {
        for (option, expected) in [
            ("--buffer", "the buffer is a whole number, 1 or more"),
            ("--count", "the count is a whole number, 0 or more"),
            ("--concurrency", "the concurrency is from 1 to 256"),
            ("--rate", "the rate is from 1 to 10000000"),
            ("--max", "the largest operand is a whole number, 1 or more"),
            ("--seed", "the seed is a whole number, 0 or more"),
        ] {
            let error = Cli::try_parse_from(["miner", option, "-1"]).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{option}");
            assert!(error.to_string().contains(expected), "{option}: {error}");
        }
    }

    #[test]
    fn an_interval_needs_a_unit_unless_it_is_zero() {
        let error = Cli::try_parse_from(["miner", "--interval", "5"]).unwrap_err();
        assert!(
            error.to_string().contains("give a unit, e.g. 5s or 100ms"),
            "{error}"
        );
        let cli = Cli::try_parse_from(["miner", "--interval", "0"]).unwrap();
        assert_eq!(cli.config().unwrap().interval, std::time::Duration::ZERO);
    }
}
