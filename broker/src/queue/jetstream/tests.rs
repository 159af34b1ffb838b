use super::super::behaviour::{later, take_and_dead_letter};
use super::connect::is_trusted_version;
use super::names::{escaped, unescaped};
use super::*;
use nats_harness::NatsServer;

/// A store on a nats-server of its own.
pub(crate) async fn scratch_store() -> JetStreamStore {
    let server = NatsServer::start();
    let mut store = JetStreamStore::connect(JetStreamConfig {
        servers: vec![server.url.clone()],
        replicas: 1,
        ack_wait: Duration::from_secs(30),
        dead_letter_limit: 10,
    })
    .await
    .unwrap();
    store.server = Some(server);
    store
}

#[tokio::test]
async fn topics_are_listed_by_their_names_and_dead_letters_are_read_back() {
    let store = scratch_store().await;
    for topic in ["dead_letters", "dead-letters", "a.b"] {
        store.create_topic(topic, 5).await.unwrap();
    }
    assert_eq!(
        store.topic_names().await,
        vec!["a.b", "dead-letters", "dead_letters"]
    );
    let job: Job = stubs::Pair { x: 4, y: 0 }.into();
    let id = store.publish("a.b", job, later()).await.unwrap();
    take_and_dead_letter(&store, "a.b", JobError::DivideByZero).await;
    let dead = store.dead_letters("a.b").await.unwrap();
    assert_eq!(dead.letters.len(), 1);
    assert_eq!(
        (dead.letters[0].job_id, dead.letters[0].job, dead.total),
        (id, job, 1)
    );
    assert!(store
        .dead_letters("dead-letters")
        .await
        .unwrap()
        .letters
        .is_empty());
}

#[test]
fn servers_older_than_two_ten_are_not_trusted() {
    for version in ["2.10.0", "2.15.1", "v2.11.3", "3.0.0", "2.12.0-beta.1"] {
        assert!(is_trusted_version(version), "{version}");
    }
    for version in ["2.9.10", "2.2.0", "1.4.1", "", "two", "2"] {
        assert!(!is_trusted_version(version), "{version}");
    }
}

#[test]
fn topic_names_survive_their_escaping() {
    for topic in ["multiply", "a.b", "a_b", "a_d", "a._d_", "__"] {
        assert!(!escaped(topic).contains('.'), "{topic}");
        assert_eq!(unescaped(&escaped(topic)), topic);
    }
    assert_ne!(escaped("a.b"), escaped("a_db"));
}

#[test]
fn a_dead_letter_is_read_in_the_shared_encoding_and_as_the_json_older_brokers_wrote() {
    let letter = DeadLetter {
        job_id: 12,
        job: stubs::Pair { x: 4, y: 0 }.into(),
        error: JobError::Undeliverable {
            deliveries: 3,
            reason: "connection reset".into(),
        },
        factory: "127.0.0.1:9".into(),
        failed_at_unix_ms: 1_764_000_000_000,
    };
    assert_eq!(
        read_dead_letter(&dead_letter_record(&letter)),
        Some(letter.clone())
    );
    let json = serde_json::to_vec(&letter).unwrap();
    assert_eq!(dead_letter_from(&json), None);
    assert_eq!(read_dead_letter(&json), Some(letter));
    assert_eq!(read_dead_letter(b"not a letter"), None);
}
