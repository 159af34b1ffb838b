//! A miner and a factory given several brokers (`--broker a,b`) move to the next one when
//! theirs goes away: the miner publishes there, the factory subscribes there. Real broker
//! processes, one of them SIGKILLed.

use std::time::Duration;

use factory::cli::LabTopic::Multiply;
use lab_console::Console;
use system_tests::*;
use tokio_util::sync::CancellationToken;

/// How many completions a broker process has printed.
fn completions(broker: &Process) -> usize {
    broker.count_lines("Factory.Multiply of ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_and_a_factory_move_to_the_next_broker_when_theirs_goes_away() {
    let (first_port, second_port) = (free_port().to_string(), free_port().to_string());
    let first = Process::start("broker", &["--port", &first_port, "--http", "off"]);
    let second = Process::start("broker", &["--port", &second_port, "--http", "off"]);
    let first_address: std::net::SocketAddr = format!("127.0.0.1:{first_port}").parse().unwrap();
    let second_address: std::net::SocketAddr = format!("127.0.0.1:{second_port}").parse().unwrap();
    client_when_up(first_address).await;
    let second_client = client_when_up(second_address).await;
    let link = transport::LinkConfig {
        brokers: vec![first_address.to_string(), second_address.to_string()],
        give_up_after: Duration::from_secs(30),
        ..transport::LinkConfig::to(first_address.to_string())
    };

    let mut factory = factory_config(first_address, &[Multiply], false);
    factory.link = link.clone();
    let _factory = lab::RunningFactory::start(0, factory, Console::quiet())
        .await
        .unwrap();
    let mut miner = lab::miner_config(first_address, "multiply");
    miner.link = link;
    miner.interval = Duration::from_millis(5);
    let stop_miner = CancellationToken::new();
    let miner = lab::start_miner(miner, Console::quiet(), stop_miner.clone());

    eventually("jobs flow through the first broker", || {
        completions(&first) >= 10
    })
    .await;
    assert_eq!(
        completions(&second),
        0,
        "nothing went to the second broker yet"
    );
    first.kill();

    eventually("jobs flow through the second broker", || {
        completions(&second) >= 10
    })
    .await;
    let stats = second_client
        .stats(tarpc::context::current())
        .await
        .unwrap();
    assert_eq!(
        stats.subscribers.len(),
        1,
        "the factory subscribed to the second broker"
    );
    stop_miner.cancel();
    let report = miner.await.unwrap().expect("the miner carried on");
    assert!(report.published >= 20, "{report:?}");
}
