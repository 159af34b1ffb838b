//! Many jobs at once: the `publish_batch` request, the miner's batcher over it, the broker's
//! batched calls to factories, and the miner's `--rate` schedule.

use std::time::{Duration, Instant};

use broker::Settings;
use factory::cli::LabTopic::Multiply;
use lab_console::Console;
use stubs::{
    BrokerClient, BrokerError, Job, Pair, PublishBatch, PublishedBatch, Triplet, MAX_PUBLISH_BATCH,
};
use system_tests::*;
use tokio_util::sync::CancellationToken;

async fn publish_batch(
    client: &BrokerClient,
    topic: &str,
    jobs: Vec<Job>,
    within: Duration,
) -> Result<PublishedBatch, BrokerError> {
    let mut context = tarpc::context::current();
    context.deadline = Instant::now() + within;
    let batch = PublishBatch {
        topic: topic.to_owned(),
        jobs,
    };
    client
        .publish_batch(context, batch)
        .await
        .expect("the broker answers")
}

fn pairs(count: i64) -> Vec<Job> {
    (0..count).map(|x| Pair { x, y: 2 }.into()).collect()
}

#[tokio::test]
async fn a_batch_is_stored_in_order_and_each_job_is_delivered_once() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let client = client(broker.address).await;
    create_topic(&client, "multiply", 100).await;
    let mut jobs = pairs(5);
    jobs.push(Triplet { x: 1, y: 2, z: 3 }.into());
    let published = publish_batch(&client, "multiply", jobs, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(published.error, None);
    assert_eq!(published.job_ids.len(), 6);
    assert!(
        published.job_ids.windows(2).all(|ids| ids[0] < ids[1]),
        "ids in the batch's order: {:?}",
        published.job_ids
    );
    assert_eq!(broker.topic_counts("multiply").await.unwrap().ready, 6);

    // With room for eight calls, the factory is sent the ready jobs in batches, and each
    // result still lands on its own job.
    let mut config = factory_config(broker.address, &[Multiply], false);
    config.prefetch = 8;
    let _factory = start_factory(&broker, 0, config).await;
    eventually("the six jobs are completed", || {
        recorder.completed("multiply").len() == 6
    })
    .await;
    let mut completed: Vec<(u64, i64)> = recorder
        .completed("multiply")
        .iter()
        .map(|completion| (completion.job_id, completion.result))
        .collect();
    completed.sort();
    let expected: Vec<(u64, i64)> = published
        .job_ids
        .iter()
        .copied()
        .zip([0, 2, 4, 6, 8, 6])
        .collect();
    assert_eq!(completed, expected);
}

#[tokio::test]
async fn a_batch_meeting_a_full_topic_stores_what_fits_and_names_the_reason_for_the_rest() {
    let (broker, _) = start_broker(Settings::default()).await;
    let client = client(broker.address).await;
    create_topic(&client, "small", 3).await;
    let published = publish_batch(&client, "small", pairs(5), Duration::from_millis(400))
        .await
        .expect("part of the batch is stored");
    assert_eq!(published.job_ids.len(), 3);
    assert_eq!(
        published.error,
        Some(BrokerError::TopicFull {
            topic: "small".into(),
            capacity: 3
        })
    );
    let stats = broker.topic_counts("small").await.unwrap();
    assert_eq!((stats.ready, stats.published), (3, 3), "no phantom job");

    // A full topic before the first job: the error alone, as a single publish gets.
    let refused = publish_batch(&client, "small", pairs(2), Duration::from_millis(300)).await;
    assert_eq!(
        refused,
        Err(BrokerError::TopicFull {
            topic: "small".into(),
            capacity: 3
        })
    );
}

#[tokio::test]
async fn bad_batches_get_typed_errors_and_the_broker_keeps_serving() {
    let (broker, _) = start_broker(Settings::default()).await;
    let client = client(broker.address).await;
    create_topic(&client, "multiply", 10).await;
    let second = Duration::from_secs(1);
    assert_eq!(
        publish_batch(
            &client,
            "multiply",
            pairs(MAX_PUBLISH_BATCH as i64 + 1),
            second
        )
        .await,
        Err(BrokerError::BatchTooLarge {
            jobs: MAX_PUBLISH_BATCH as u32 + 1,
            max: MAX_PUBLISH_BATCH as u32
        })
    );
    assert_eq!(
        publish_batch(&client, "nowhere", pairs(2), second).await,
        Err(BrokerError::NoSuchTopic {
            topic: "nowhere".into()
        })
    );
    assert!(matches!(
        publish_batch(&client, "has space", pairs(2), second).await,
        Err(BrokerError::InvalidTopic { .. })
    ));
    assert_eq!(
        publish_batch(&client, "multiply", Vec::new(), second).await,
        Ok(PublishedBatch {
            job_ids: Vec::new(),
            error: None
        })
    );
    assert_eq!(broker.topic_counts("multiply").await.unwrap().published, 0);
    let published = publish_batch(&client, "multiply", pairs(2), second)
        .await
        .unwrap();
    assert_eq!(published.job_ids.len(), 2);
}

#[tokio::test]
async fn a_miner_with_many_publishers_publishes_each_job_once_through_its_batches() {
    let (broker, recorder) = start_broker(Settings::default()).await;
    let _factory = lab_factory(&broker, &[Multiply], false).await;
    let mut config = lab::miner_config(broker.address, "multiply");
    config.interval = Duration::ZERO;
    config.concurrency = 32;
    config.count = Some(3_000);
    config.buffer = 50;
    let report = miner::run(config, Console::quiet(), CancellationToken::new())
        .await
        .expect("the miner publishes every job");
    assert_eq!(report.published, 3_000);
    assert!(
        0 < report.ack_p50_us && report.ack_p50_us <= report.ack_p99_us,
        "acknowledgement times are measured: {report:?}"
    );
    eventually("every job is completed", || {
        recorder.completed("multiply").len() == 3_000
    })
    .await;
    assert_eq!(
        recorder.completed_ids("multiply").len(),
        3_000,
        "3,000 distinct jobs, none twice"
    );
    let stats = broker.topic_counts("multiply").await.unwrap();
    assert_eq!((stats.published, stats.completed), (3_000, 3_000));
}

#[tokio::test]
async fn a_rate_spreads_the_jobs_over_time() {
    let (broker, _) = start_broker(Settings::default()).await;
    let mut config = lab::miner_config(broker.address, "rated");
    config.rate = Some(200);
    config.concurrency = 4;
    config.count = Some(41);
    // No factory takes them: room for all.
    config.buffer = 100;
    let started = Instant::now();
    let report = miner::run(config, Console::quiet(), CancellationToken::new())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.published, 41);
    // Job k is due k/200 s after the first: the last, job 40, not before 200 ms.
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert_eq!(broker.topic_counts("rated").await.unwrap().published, 41);
}

/// The Factory service as the lab defines it, before batched calls existed.
#[tarpc::service]
trait LabFactory {
    async fn multiply(job: Job) -> Result<stubs::JobReport, stubs::JobError>;
    async fn divide(job: Job) -> Result<stubs::JobReport, stubs::JobError>;
}

#[derive(Clone)]
struct LabOnlyFactory;

impl LabFactory for LabOnlyFactory {
    async fn multiply(
        self,
        _: tarpc::context::Context,
        job: Job,
    ) -> Result<stubs::JobReport, stubs::JobError> {
        match job {
            Job::Pair(Pair { x, y }) => Ok(stubs::JobReport { result: x * y }),
            Job::Triplet(Triplet { x, y, z }) => Ok(stubs::JobReport { result: x * y * z }),
        }
    }

    async fn divide(
        self,
        _: tarpc::context::Context,
        _: Job,
    ) -> Result<stubs::JobReport, stubs::JobError> {
        Err(stubs::JobError::DivideByZero)
    }
}

#[tokio::test]
async fn a_factory_without_batched_calls_is_called_one_job_at_a_time() {
    use futures::StreamExt;
    use tarpc::server::{BaseChannel, Channel};

    let (broker, recorder) = start_broker(Settings::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let factory_address = listener.local_addr().unwrap();
    tokio::spawn(transport::accept(
        listener,
        transport::Admission::default(),
        CancellationToken::new(),
        tokio_util::task::TaskTracker::new(),
        |stream, _| async move {
            BaseChannel::with_defaults(transport::framed(stream))
                .execute(LabOnlyFactory.serve())
                .for_each_concurrent(None, |call| call)
                .await;
        },
    ));

    let client = client(broker.address).await;
    create_topic(&client, "multiply", 100).await;
    let published = publish_batch(&client, "multiply", pairs(20), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(published.job_ids.len(), 20);
    let subscription = stubs::Subscription {
        topic: "multiply".into(),
        factory_address: factory_address.to_string(),
        callback: stubs::MULTIPLY.into(),
        prefetch: 8,
    };
    client
        .subscribe(tarpc::context::current(), subscription)
        .await
        .unwrap()
        .expect("the subscription is taken");
    eventually("the twenty jobs are completed", || {
        recorder.completed("multiply").len() == 20
    })
    .await;
    let stats = broker.topic_counts("multiply").await.unwrap();
    assert_eq!((stats.completed, stats.requeued), (20, 0), "no call failed");
    let mut results = recorder.results("multiply");
    results.sort();
    assert_eq!(results, (0..20).map(|x| x * 2).collect::<Vec<i64>>());
}
