//! What a person types: the value parsers and the command-line parsing every lab program shares,
//! so that a mistake on the command line is a usage error (status 2, on standard error) that says
//! what to type instead, the same way in every program.
//!
//! - [`parse`]: `Cli::parse()`, plus a tip for options written with one dash, as Go's `flag`
//!   package takes them (`-topic divide`).
//! - [`broker_address`]: `HOST:PORT`, refused at once rather than after a failed connection.
//! - [`from_to`], [`at_least`]: whole numbers read with their sign, so that `-1` is out of range
//!   rather than an unknown option. The option needs `allow_negative_numbers = true` too, or
//!   clap takes `-1` for a flag before the parser sees it.
//! - [`duration`], [`duration_from_to`]: the one rule for durations. A bare number other than `0`
//!   is refused, because `5` could be seconds or milliseconds (Go's `flag.Duration` refuses it
//!   too); `0` is zero in every unit.

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

use clap::error::ErrorKind;

/// An option of a Go program of the lab that pairbroker spells differently, and how.
#[derive(Clone, Copy, Debug)]
pub struct GoFlag {
    /// The Go option's name, without its dash (`ip`).
    pub name: &'static str,
    /// What to type here instead (`--ip IP --port PORT`).
    pub instead: &'static str,
}

/// Parses the command line as `C::parse()` does, exiting with status 2 on a usage error. When
/// an argument is one dash and a long option's name (`-topic`), as Go's `flag` package takes
/// them, the error names it and adds "tip: pairbroker's options take two dashes: --topic";
/// `go_flags` gives what to type for the Go options that have another name or shape here.
pub fn parse<C: clap::Parser>(go_flags: &[GoFlag]) -> C {
    try_parse_from(std::env::args_os(), go_flags).unwrap_or_else(|error| error.exit())
}

/// [`parse`] of `args` (the program's name first), returning the error instead of exiting.
pub fn try_parse_from<C, I, T>(args: I, go_flags: &[GoFlag]) -> Result<C, clap::Error>
where
    C: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = C::command();
    let parsed = command
        .try_get_matches_from_mut(&args)
        .and_then(|mut matches| C::from_arg_matches_mut(&mut matches));
    parsed.map_err(|error| match single_dash_option(&command, &args, go_flags) {
        // The tip explains the error clap found, whatever clap made of the argument (`-topic`
        // is `-t` and more to clap; `-http` even shows the help).
        Some((typed, instead)) => command.error(
            ErrorKind::UnknownArgument,
            format!(
                "unexpected argument '{typed}' found\n\n  tip: pairbroker's options take two dashes: {instead}"
            ),
        ),
        None => error,
    })
}

/// The first argument written as Go writes options (one dash, then a long option's name), and
/// what to type instead.
fn single_dash_option(
    command: &clap::Command,
    args: &[OsString],
    go_flags: &[GoFlag],
) -> Option<(String, String)> {
    let names = long_options(command);
    args.iter()
        .skip(1)
        .map_while(|arg| arg.to_str().filter(|arg| *arg != "--"))
        .find_map(|arg| {
            let name = arg.strip_prefix('-')?.split('=').next()?;
            if !name.starts_with(|c: char| c.is_ascii_alphabetic()) || name.len() < 2 {
                return None;
            }
            let instead = match go_flags.iter().find(|flag| flag.name == name) {
                Some(flag) => flag.instead.to_owned(),
                None if names.iter().any(|long| long == name) => format!("--{name}"),
                None => return None,
            };
            Some((format!("-{name}"), instead))
        })
}

/// The long options of `command` and of its subcommands, except `help` and `version`: `-help`
/// shows the help, as in Go.
fn long_options(command: &clap::Command) -> Vec<String> {
    let mut names: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|long| !matches!(*long, "help" | "version"))
        .map(str::to_owned)
        .collect();
    for subcommand in command.get_subcommands() {
        names.extend(long_options(subcommand));
    }
    names
}

/// What a broker's address must look like, for the error that refuses one.
const HOST_PORT: &str = "expected HOST:PORT, e.g. 127.0.0.1:8030";

/// `--broker`: `HOST:PORT`, the host a name, an IPv4 address or a bracketed IPv6 address, and
/// the port from 1 to 65535. Without this, `--broker 127.0.0.1` would fail later as a broker
/// that cannot be reached, and send the user looking for one.
pub fn broker_address(text: &str) -> Result<String, String> {
    let text = text.trim();
    let (host, port) = text.rsplit_once(':').ok_or_else(|| HOST_PORT.to_owned())?;
    let host_is_valid = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        }
    };
    if !host_is_valid {
        return Err(HOST_PORT.to_owned());
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(text.to_owned()),
        _ => Err(format!("{HOST_PORT}, the port from 1 to 65535")),
    }
}

/// The integer types an option read by [`from_to`] or [`at_least`] may hold.
pub trait WholeNumber:
    Copy + fmt::Display + Into<i128> + TryFrom<i128> + Send + Sync + 'static
{
    /// The type's largest value.
    const MAX: Self;
}

macro_rules! whole_numbers {
    ($($type:ty),*) => {
        $(impl WholeNumber for $type {
            const MAX: Self = <$type>::MAX;
        })*
    };
}

whole_numbers!(u8, u16, u32, u64, i64);

/// A parser of a whole number from `min` to `max`, whose error names `what`: "the port is from
/// 0 to 65535".
pub fn from_to<T: WholeNumber>(
    what: &'static str,
    min: T,
    max: T,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |text| {
        whole_number(text, min, max).map_err(|number| match number {
            Some(_) => format!("{what} is from {min} to {max}"),
            None => format!("{what} is a whole number from {min} to {max}"),
        })
    }
}

/// A parser of a whole number of at least `min`, as large as its type holds: "the buffer is a
/// whole number, 1 or more".
pub fn at_least<T: WholeNumber>(
    what: &'static str,
    min: T,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |text| {
        whole_number(text, min, T::MAX).map_err(|number| match number {
            Some(number) if number > T::MAX.into() => format!("{what} is at most {}", T::MAX),
            _ => format!("{what} is a whole number, {min} or more"),
        })
    }
}

/// `text` as a number from `min` to `max`; otherwise the number it is, if it is one.
fn whole_number<T: WholeNumber>(text: &str, min: T, max: T) -> Result<T, Option<i128>> {
    let number: i128 = text.trim().parse().map_err(|_| None)?;
    if (min.into()..=max.into()).contains(&number) {
        T::try_from(number).map_err(|_| Some(number))
    } else {
        Err(Some(number))
    }
}

/// What to type for a duration, for the errors that refuse one.
const DURATION_EXAMPLE: &str = "e.g. 5s or 100ms";

/// A duration with its unit (`5s`, `100ms`, `1m30s`), or `0`. A bare number other than 0 is
/// refused: `5` could be seconds or milliseconds, and guessing wrong is a thousandfold.
pub fn duration(text: &str) -> Result<humantime::Duration, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!(
            "a duration cannot be negative; give one, {DURATION_EXAMPLE}, or 0"
        ));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u64>() {
            Ok(0) => Ok(Duration::ZERO.into()),
            _ => Err(format!("give a unit, {DURATION_EXAMPLE}")),
        };
    }
    text.parse()
        .map_err(|error| format!("{error}; give a duration, {DURATION_EXAMPLE}"))
}

/// A parser of a [`duration`] from `min` to `max`, whose error names `what`: "the call timeout
/// is from 1ms to 1h".
pub fn duration_from_to(
    what: &'static str,
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<humantime::Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let duration = duration(text)?;
        if (min..=max).contains(&*duration) {
            Ok(duration)
        } else {
            Err(format!(
                "{what} is from {} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    #[command(name = "program")]
    struct Cli {
        #[arg(long, default_value = "multiply")]
        topic: String,
        #[arg(long, default_value_t = 8050, allow_negative_numbers = true, value_parser = from_to("the port", 0u16, u16::MAX))]
        port: u16,
        #[arg(long)]
        quiet: bool,
    }

    fn error_of(args: &[&str], go_flags: &[GoFlag]) -> String {
        let args = [&["program"], args].concat();
        match try_parse_from::<Cli, _, _>(args, go_flags) {
            Ok(cli) => panic!("parsed: {cli:?}"),
            Err(error) => {
                assert_eq!(error.exit_code(), 2, "{error}");
                error.to_string()
            }
        }
    }

    #[test]
    fn an_option_with_one_dash_gets_a_tip_naming_it_with_two() {
        for args in [
            &["-topic", "divide"][..],
            &["-topic=divide"],
            &["--quiet", "-topic", "divide"],
        ] {
            let error = error_of(args, &[]);
            assert!(
                error.starts_with("error: unexpected argument '-topic' found"),
                "{error}"
            );
            assert!(
                error.contains("\n  tip: pairbroker's options take two dashes: --topic\n"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_go_option_spelt_otherwise_here_gets_what_to_type() {
        let ip = GoFlag {
            name: "ip",
            instead: "--ip IP --port PORT",
        };
        let error = error_of(&["-ip", "127.0.0.1:8050"], &[ip]);
        assert!(
            error.contains("tip: pairbroker's options take two dashes: --ip IP --port PORT"),
            "{error}"
        );
    }

    #[test]
    fn other_errors_are_clap_s_own() {
        let error = error_of(&["-x"], &[]);
        assert!(!error.contains("two dashes"), "{error}");
        // After `--` nothing is an option.
        let error = error_of(&["--", "-topic"], &[]);
        assert!(!error.contains("two dashes"), "{error}");
        let cli = try_parse_from::<Cli, _, _>(["program", "--topic", "divide"], &[]).unwrap();
        assert_eq!(cli.topic, "divide");
    }

    #[test]
    fn a_negative_number_is_out_of_range_not_an_option() {
        let error = error_of(&["--port", "-1"], &[]);
        assert!(
            error.starts_with(
                "error: invalid value '-1' for '--port <PORT>': the port is from 0 to 65535"
            ),
            "{error}"
        );
        let error = error_of(&["--port", "99999"], &[]);
        assert!(error.contains("the port is from 0 to 65535"), "{error}");
        let error = error_of(&["--port", "eighty"], &[]);
        assert!(
            error.contains("the port is a whole number from 0 to 65535"),
            "{error}"
        );
    }

    #[test]
    fn at_least_names_the_type_s_limit_only_when_passed() {
        let buffer = at_least("the buffer", 1u32);
        assert_eq!(buffer("10"), Ok(10));
        assert_eq!(buffer("4294967295"), Ok(u32::MAX));
        assert_eq!(
            buffer("-1").unwrap_err(),
            "the buffer is a whole number, 1 or more"
        );
        assert_eq!(
            buffer("0").unwrap_err(),
            "the buffer is a whole number, 1 or more"
        );
        assert_eq!(
            buffer("4294967296").unwrap_err(),
            "the buffer is at most 4294967295"
        );
        let count = at_least("the count", 0u64);
        assert_eq!(count("0"), Ok(0));
        assert_eq!(count("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn broker_address_is_host_colon_port() {
        for good in [
            "127.0.0.1:8030",
            "localhost:8030",
            "broker-1.lab.example:9000",
            "[::1]:8030",
            " 127.0.0.1:8030",
        ] {
            assert_eq!(broker_address(good), Ok(good.trim().to_owned()));
        }
        for wrong in [
            "nonsense",
            "127.0.0.1",
            "127.0.0.1:99999",
            "127.0.0.1:0",
            ":8030",
            "::1:8030",
            "http://127.0.0.1:8030",
            "127.0.0.1:port",
            "",
        ] {
            let error = broker_address(wrong).unwrap_err();
            assert!(error.starts_with(HOST_PORT), "{wrong:?}: {error}");
        }
    }

    #[test]
    fn a_duration_has_a_unit_unless_it_is_zero() {
        let parse = |text: &str| duration(text).map(Duration::from);
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("000"), Ok(Duration::ZERO));
        for bare in ["5", "100", "99999999999999999999999"] {
            assert_eq!(
                parse(bare).unwrap_err(),
                "give a unit, e.g. 5s or 100ms",
                "{bare}"
            );
        }
        for wrong in ["-1", "-1s", "soon", "5 parsecs", ""] {
            let error = parse(wrong).unwrap_err();
            assert!(error.contains("5s or 100ms"), "{wrong:?}: {error}");
        }
    }

    #[test]
    fn a_duration_out_of_its_range_says_the_range() {
        let timeout = duration_from_to(
            "the call timeout",
            Duration::from_millis(1),
            Duration::from_secs(3_600),
        );
        assert_eq!(
            timeout("2s").map(Duration::from),
            Ok(Duration::from_secs(2))
        );
        for wrong in ["0", "0ms", "2h"] {
            assert_eq!(
                timeout(wrong).unwrap_err(),
                "the call timeout is from 1ms to 1h",
                "{wrong}"
            );
        }
        assert_eq!(timeout("10").unwrap_err(), "give a unit, e.g. 5s or 100ms");
    }
}
