//! The `factory` program's command line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::{Parser, ValueEnum};
use lab_console::usage::{at_least, from_to, GoFlag};

use crate::{FactoryConfig, DEFAULT_BUFFER};

/// The port the lab's factory listens on.
pub const DEFAULT_PORT: u16 = 8050;

const EXAMPLES: &str = "\
Examples:
  cargo run -p factory -- --port 8031                  # Multiply and Divide, pipeline on
  cargo run -p factory -- --port 8032 --topics multiply --no-pipeline   # Part 1
  cargo run -p factory -- --port 0 --prefetch 16       # a free port, 16 jobs in flight
  cargo run -p factory -- --broker 127.0.0.1:9000 --log-format json";

/// The Go factory's options that take another name or shape here, and what to type instead.
pub const GO_FLAGS: &[GoFlag] = &[
    GoFlag {
        name: "ip",
        instead: "--ip IP --port PORT (the address and the port are two options)",
    },
    GoFlag {
        name: "no-divide",
        instead: "--topics multiply",
    },
    GoFlag {
        name: "subscribe-times",
        instead: "--prefetch N",
    },
];

/// A topic of the lab a factory can work on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LabTopic {
    /// `multiply`, called back with `Factory.Multiply`.
    Multiply,
    /// `divide`, called back with `Factory.Divide`.
    Divide,
}

impl LabTopic {
    /// The topic's name.
    pub fn name(self) -> &'static str {
        match self {
            LabTopic::Multiply => stubs::MULTIPLY_TOPIC,
            LabTopic::Divide => stubs::DIVIDE_TOPIC,
        }
    }

    /// The callback the broker calls for the topic's jobs.
    pub fn callback(self) -> &'static str {
        match self {
            LabTopic::Multiply => stubs::MULTIPLY,
            LabTopic::Divide => stubs::DIVIDE,
        }
    }
}

/// A pairbroker factory: serves Multiply and Divide, subscribes to the broker's `multiply` and
/// `divide` topics, and publishes a new Divide job for every two Multiply results.
#[derive(Debug, Clone, Parser)]
#[command(name = "factory", version, after_help = EXAMPLES)]
pub struct Cli {
    /// The TCP port to serve on; 0 takes a free one.
    ///
    /// The factory subscribes with the port it got, so that the broker calls it there.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT, allow_negative_numbers = true, value_parser = from_to("the port", 0u16, u16::MAX), help_heading = "Network")]
    pub port: u16,
    /// The address to serve on, which is also the address given to the broker.
    ///
    /// An IP address alone: the port is --port. The broker must be able to reach it.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST), value_parser = ip_address, help_heading = "Network")]
    pub ip: IpAddr,
    /// How to reach the broker.
    #[command(flatten)]
    pub broker: lab_console::BrokerArgs,
    /// The certificate to serve the broker's calls with.
    #[command(flatten)]
    pub certificate: lab_console::ServeTls,
    /// The topics to work on, separated by commas.
    ///
    /// The factory subscribes to each, and serves its callback: `multiply` with
    /// `Factory.Multiply`, `divide` with `Factory.Divide`.
    #[arg(long, value_name = "TOPIC[,...]", value_enum, value_delimiter = ',', default_values_t = [LabTopic::Multiply, LabTopic::Divide], help_heading = "Work")]
    pub topics: Vec<LabTopic>,
    /// How many jobs the broker keeps in flight to this factory per topic.
    ///
    /// Jobs that are ready together travel in one call. 1 or more.
    #[arg(long, value_name = "N", default_value_t = stubs::DEFAULT_PREFETCH, allow_negative_numbers = true, value_parser = at_least("the prefetch", 1u32), help_heading = "Work")]
    pub prefetch: u32,
    /// The buffer of the topics this factory creates if they do not exist yet.
    ///
    /// How many ready jobs each holds at most. 1 or more.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BUFFER, allow_negative_numbers = true, value_parser = at_least("the buffer", 1u32), help_heading = "Work")]
    pub buffer: u32,
    /// Do not publish Divide jobs from Multiply results (Parts 1 and 2a).
    ///
    /// Without it, every two Multiply results (three with Triplets) become one Divide job.
    #[arg(long, help_heading = "Work")]
    pub no_pipeline: bool,
    /// Print nothing per job.
    ///
    /// For load, where a line per job costs more than the job.
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
    /// The address to serve on.
    pub fn listen_address(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// What the factory does, apart from where it listens: an error when its TLS files cannot
    /// be used.
    pub fn config(&self) -> Result<FactoryConfig, transport::TlsError> {
        Ok(FactoryConfig {
            tls: self.broker.tls.files_with(&self.certificate).server()?,
            link: self.broker.link()?,
            ip: self.ip,
            topics: self.topics.clone(),
            prefetch: self.prefetch,
            buffer: self.buffer,
            pipeline: !self.no_pipeline,
        })
    }
}

/// `--ip`: an IP address alone. `127.0.0.1:8050`, as the Go factory's `-ip` takes it, gets
/// what to type here.
fn ip_address(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| match text.parse::<SocketAddr>() {
        Ok(address) => format!(
            "the port is an option of its own: --ip {} --port {}",
            address.ip(),
            address.port()
        ),
        Err(_) => "expected an IP address, e.g. 127.0.0.1".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    #[test]
    fn a_negative_number_is_out_of_range_rather_than_an_unknown_option() {
        for (option, expected) in [
            ("--port", "the port is from 0 to 65535"),
            ("--prefetch", "the prefetch is a whole number, 1 or more"),
            ("--buffer", "the buffer is a whole number, 1 or more"),
        ] {
            let error = Cli::try_parse_from(["factory", option, "-1"]).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{option}");
            assert!(error.to_string().contains(expected), "{option}: {error}");
        }
    }

    #[test]
    fn wait_for_broker_reaches_the_link() {
        let cli = Cli::try_parse_from(["factory", "--wait-for-broker", "1m"]).unwrap();
        assert_eq!(
            cli.config().expect("no TLS files").link.wait_for_broker,
            std::time::Duration::from_secs(60)
        );
        let error = Cli::try_parse_from(["factory", "--wait-for-broker", "5"]).unwrap_err();
        assert!(error.to_string().contains("give a unit"), "{error}");
    }

    #[test]
    fn an_ip_with_a_port_says_that_the_port_is_an_option_of_its_own() {
        let error = Cli::try_parse_from(["factory", "--ip", "127.0.0.1:8051"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("the port is an option of its own: --ip 127.0.0.1 --port 8051"),
            "{error}"
        );
    }

    #[test]
    fn the_go_factory_s_options_get_what_to_type_here() {
        let error = lab_console::usage::try_parse_from::<Cli, _, _>(
            ["factory", "-ip", "127.0.0.1:8051"],
            GO_FLAGS,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("tip: pairbroker's options take two dashes: --ip IP --port PORT"),
            "{error}"
        );
    }
}
