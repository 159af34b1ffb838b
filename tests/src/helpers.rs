//! Shorthands for what many tests start with: a topic, and the lab's factory and miner beside
//! a broker.

use factory::cli::LabTopic;
use lab::{RunningBroker, RunningFactory};
use lab_console::Console;
use miner::{MinerConfig, MinerError, MinerReport};
use stubs::{BrokerClient, BrokerError, ChannelRequest};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{factory_config, program, start_factory, Process};

/// Starts a quiet factory on a free port that serves `topics` for `broker`, its pipeline on or
/// off, and waits until the broker lists its subscriptions.
pub async fn lab_factory(
    broker: &RunningBroker,
    topics: &[LabTopic],
    pipeline: bool,
) -> RunningFactory {
    start_factory(broker, 0, factory_config(broker.address, topics, pipeline)).await
}

/// Starts our factory as a process for the broker at `broker`, on `port` (0 for a free one),
/// serving `topics` (comma-separated), with `extra` arguments after those.
pub fn factory_process(broker: &str, port: u16, topics: &str, extra: &[&str]) -> Process {
    let port = port.to_string();
    let mut args = vec!["--broker", broker, "--port", &port, "--topics", topics];
    args.extend_from_slice(extra);
    Process::start("factory", &args)
}

/// Asks the broker through `client` to create `topic` with `buffer`: its message, or its
/// refusal.
pub async fn try_create_topic(
    client: &BrokerClient,
    topic: &str,
    buffer: u32,
) -> Result<String, BrokerError> {
    let request = ChannelRequest {
        topic: topic.to_owned(),
        buffer,
    };
    client
        .create_channel(tarpc::context::current(), request)
        .await
        .expect("the broker answers")
        .map(|report| report.message)
}

/// Creates `topic` with `buffer` through `client`, failing the test if the broker refuses.
pub async fn create_topic(client: &BrokerClient, topic: &str, buffer: u32) {
    try_create_topic(client, topic, buffer)
        .await
        .expect("the broker creates the topic");
}

/// Runs a quiet miner with `config` in a task of its own until it is done or `stop` is
/// cancelled.
pub fn spawn_miner(
    config: MinerConfig,
    stop: CancellationToken,
) -> JoinHandle<Result<MinerReport, MinerError>> {
    tokio::spawn(miner::run(config, Console::quiet(), stop))
}

/// `broker stats --json` of the broker at `address`, if it answers.
pub async fn stats_at(address: &str) -> Option<serde_json::Value> {
    let output = tokio::process::Command::new(program("broker"))
        .args(["stats", "--json", "--broker", address])
        .output()
        .await
        .expect("run broker stats");
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}
