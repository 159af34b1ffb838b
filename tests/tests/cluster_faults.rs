//! Brokers over a three-node NATS JetStream cluster (`--store nats://…,…,… --replicas 3`),
//! under load, lose one NATS node and one broker at the same moment, both SIGKILLed and started
//! again. Miners publish through each broker and move to the other when theirs goes away;
//! factories do the same. Every job a miner got an acknowledgement for must be completed at
//! least once, counted job by job; duplicates are reported. All real processes.

use system_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_job_is_lost_when_a_nats_node_and_a_broker_die() {
    let mut cluster = NatsCluster::start();
    let store = cluster.urls();
    let ports = free_ports(2);
    let ports = [ports[0].to_string(), ports[1].to_string()];
    let addresses = ports.clone().map(|port| format!("127.0.0.1:{port}"));
    let broker_args = |index: usize| -> Vec<String> {
        [
            "--port",
            &ports[index],
            "--http",
            "off",
            "--quiet",
            "--store",
            &store,
            "--replicas",
            "3",
            // The ack wait: the jobs in flight on a broker that dies come back after it.
            "--call-timeout",
            "2s",
        ]
        .map(String::from)
        .to_vec()
    };
    let start_broker = |index: usize| {
        let args = broker_args(index);
        Process::start(
            "broker",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let address = |index: usize| -> std::net::SocketAddr { addresses[index].parse().unwrap() };
    let mut first_broker = start_broker(0);
    let mut second_broker = start_broker(1);
    let second = second_broker.client_when_up(address(1)).await;
    first_broker.client_when_up(address(0)).await;

    // Each program knows both brokers, its own first.
    let both = |first: usize| format!("{},{}", addresses[first], addresses[1 - first]);
    let miners: Vec<Process> = [("multiply", 0), ("divide", 1)]
        .into_iter()
        .map(|(topic, broker)| load_miner(&both(broker), topic))
        .collect();
    let factories: Vec<Process> = [0, 1, 0]
        .into_iter()
        .map(|broker| load_factory(&both(broker)))
        .collect();
    let acknowledged_so_far = || -> usize {
        miners
            .iter()
            .map(|miner| miner.count_lines("published "))
            .sum()
    };
    let more_than = async |what: &str, jobs: usize| {
        eventually(what, || acknowledged_so_far() > jobs).await;
    };

    more_than("both miners publish", 500).await;
    let seed = clock_seed();
    let node = (next_random(&mut seed.clone()) % 3) as usize;
    println!("killing NATS node {node} (seeded with {seed}) and the first broker");
    cluster.nodes[node].kill();
    first_broker.kill();
    let at_kill = acknowledged_so_far();
    more_than(
        "jobs are acknowledged with a NATS node and a broker down",
        at_kill + 500,
    )
    .await;
    cluster.nodes[node].restart();
    let mut first_broker_again = start_broker(0);
    first_broker_again.client_when_up(address(0)).await;
    let at_restart = acknowledged_so_far();
    more_than(
        "jobs are acknowledged after both came back",
        at_restart + 500,
    )
    .await;

    // The miners stop gracefully: what they have in flight is answered and printed.
    let mut acknowledged_jobs = Vec::new();
    let mut miner_lines = Vec::new();
    for mut miner in miners {
        miner.signal("TERM");
        let status = miner.exit_status().await;
        assert!(status.success(), "{status}: {}", miner.last_errors(20));
        acknowledged_jobs.extend(acknowledged(&miner.lines()));
        miner_lines.extend(miner.lines());
    }
    let reckoning = reckon_when_settled(&second, &acknowledged_jobs, &factories).await;
    println!(
        "NATS node and broker killed after {at_kill} acknowledgements, back after {at_restart}: \
         {} jobs acknowledged, {} missing, {} completed more than once",
        reckoning.acknowledged, reckoning.missing_count, reckoning.duplicates,
    );
    if !reckoning.missing.is_empty() {
        // Each missing job's line, and every other acknowledged job given the same id.
        for (topic, x, y) in reckoning.missing.iter().chain(&reckoning.duplicated) {
            let mine = format!("published {x} and {y} to {topic} ");
            let line = miner_lines.iter().find(|line| line.starts_with(&mine));
            let id = line
                .and_then(|line| line.rsplit_once("(job "))
                .map(|(_, id)| id);
            let same_id: Vec<&String> = miner_lines
                .iter()
                .filter(|other| {
                    id.is_some_and(|id| other.ends_with(&format!("to {topic} (job {id}")))
                })
                .collect();
            let position = line.and_then(|line| miner_lines.iter().position(|other| other == line));
            println!("missing or twice: {line:?} (line {position:?} of {}); acknowledged with its id: {same_id:?}", miner_lines.len());
        }
        let stats = second.stats(tarpc::context::current()).await;
        panic!(
            "{} acknowledged jobs were never completed, the first: {:?}\nthe second broker's figures: {stats:?}\nbrokers at {addresses:?}, their last words:\n{}\n{}\nJetStream's:\n{}",
            reckoning.missing_count,
            reckoning.missing,
            first_broker_again.last_errors(30),
            second_broker.last_errors(30),
            cluster.report()
        );
    }
}
