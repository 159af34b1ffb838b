//! The `factory` program's command line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::{Parser, ValueEnum};

use crate::{FactoryConfig, DEFAULT_BUFFER};

/// The port the lab's factory listens on.
pub const DEFAULT_PORT: u16 = 8050;

const EXAMPLES: &str = "\
Examples:
  cargo run -p factory -- --port 8031                  # Multiply and Divide, pipeline on
  cargo run -p factory -- --port 8032 --topics multiply --no-pipeline   # Part 1
  cargo run -p factory -- --port 0 --prefetch 16       # a free port, 16 jobs in flight
  cargo run -p factory -- --broker 127.0.0.1:9000 --log-format json";

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
    /// The TCP port to serve on; 0 takes a free one (and subscribes with it).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// The address to serve on, which is also the address given to the broker.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub ip: IpAddr,
    /// How to reach the broker.
    #[command(flatten)]
    pub broker: lab_console::BrokerArgs,
    /// The topics to work on.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [LabTopic::Multiply, LabTopic::Divide])]
    pub topics: Vec<LabTopic>,
    /// How many jobs the broker keeps in flight to this factory per topic; jobs that are ready
    /// together travel in one call.
    #[arg(long, default_value_t = stubs::DEFAULT_PREFETCH)]
    pub prefetch: u32,
    /// The buffer of the topics this factory creates if they do not exist yet.
    #[arg(long, default_value_t = DEFAULT_BUFFER)]
    pub buffer: u32,
    /// Do not publish Divide jobs from Multiply results (Parts 1 and 2a).
    #[arg(long)]
    pub no_pipeline: bool,
    /// Print nothing per job: for load, where a line per job costs more than the job.
    #[arg(long)]
    pub quiet: bool,
    /// How logs are written to standard error.
    #[arg(long, value_enum, default_value_t = lab_console::LogFormat::Text)]
    pub log_format: lab_console::LogFormat,
}

impl Cli {
    /// The address to serve on.
    pub fn listen_address(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// What the factory does, apart from where it listens.
    pub fn config(&self) -> FactoryConfig {
        FactoryConfig {
            link: self.broker.link(),
            ip: self.ip,
            topics: self.topics.clone(),
            prefetch: self.prefetch,
            buffer: self.buffer,
            pipeline: !self.no_pipeline,
        }
    }
}
