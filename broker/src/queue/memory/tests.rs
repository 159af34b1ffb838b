use super::super::behaviour::{later, take_and_dead_letter, FACTORY};
use super::*;
use stubs::Pair;

#[tokio::test]
async fn dead_letters_are_bounded_and_the_oldest_are_dropped_first() {
    let store = MemoryStore::with_dead_letter_limit(2);
    store.create_topic("t", 10).await.unwrap();
    for x in 0..3 {
        store
            .publish("t", Pair { x, y: 0 }.into(), later())
            .await
            .unwrap();
        take_and_dead_letter(&store, "t", JobError::DivideByZero).await;
    }
    let dead = store.dead_letters("t").await.unwrap();
    assert_eq!((dead.total, dead.dropped), (3, 1));
    let jobs: Vec<Job> = dead.letters.iter().map(|letter| letter.job).collect();
    assert_eq!(
        jobs,
        vec![Pair { x: 1, y: 0 }.into(), Pair { x: 2, y: 0 }.into()]
    );
    assert!(dead
        .letters
        .iter()
        .all(|letter| letter.error == JobError::DivideByZero
            && letter.factory == FACTORY
            && letter.failed_at_unix_ms > 0));
    let counts = store.counts("t").await.unwrap();
    assert_eq!((counts.failed, counts.ready, counts.in_flight), (3, 0, 0));
}
