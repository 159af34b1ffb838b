use super::*;

#[test]
fn a_record_survives_its_encoding_and_nothing_else_is_read_as_one() {
    let job = QueuedJob {
        id: u64::MAX,
        job: Triplet {
            x: i64::MIN,
            y: 0,
            z: i64::MAX,
        }
        .into(),
        attempts: u32::MAX,
        published_at: UNIX_EPOCH + Duration::from_micros(1_764_000_000_123_456),
    };
    let record = to_record(&job);
    assert!(record.len() <= MAX_RECORD);
    assert_eq!(from_record(&record), Some(job));
    assert_eq!(from_record(&record[..record.len() - 1]), None, "cut short");
    let mut longer = record.clone();
    longer.push(0);
    assert_eq!(from_record(&longer), None, "followed by more bytes");
}

#[test]
fn a_varint_that_does_not_fit_64_bits_is_refused() {
    let mut out = [0u8; 10];
    let length = put_varint(u64::MAX, &mut out);
    assert_eq!(read_varint(&mut out[..length].iter()), Some(u64::MAX));
    out[9] = 2;
    assert_eq!(read_varint(&mut out.iter()), None);
    assert_eq!(read_varint(&mut [0x80, 0x80].iter()), None);
}

#[test]
fn dead_letters_survive_their_encoding() {
    let letter = DeadLetter {
        job_id: 77,
        job: Triplet { x: -1, y: 0, z: 3 }.into(),
        error: JobError::DivideByZero,
        factory: "127.0.0.1:8050".into(),
        failed_at_unix_ms: 1_764_000_000_000,
    };
    assert_eq!(
        dead_letter_from(&dead_letter_record(&letter)),
        Some(letter.clone())
    );
    let other = DeadLetter {
        error: JobError::not_written("Multiply", "return x * y"),
        ..letter
    };
    assert_eq!(
        dead_letter_from(&dead_letter_record(&other)),
        Some(other.clone())
    );
    let undeliverable = DeadLetter {
        error: JobError::Undeliverable {
            deliveries: 5,
            reason: "connection reset".into(),
        },
        ..other
    };
    assert_eq!(
        dead_letter_from(&dead_letter_record(&undeliverable)),
        Some(undeliverable)
    );
    assert_eq!(dead_letter_from(&[3, 1, 2]), None);
}

#[test]
fn the_bytes_are_those_every_broker_wrote() {
    let published_at = UNIX_EPOCH + Duration::from_micros(300);
    let job = QueuedJob::new(5, Pair { x: 3, y: -2 }.into(), published_at);
    assert_eq!(to_record(&job), [0x00, 0x05, 0x00, 0xac, 0x02, 0x06, 0x03]);
    let letter = DeadLetter {
        job_id: 5,
        job: Pair { x: 3, y: -2 }.into(),
        error: JobError::Other {
            reason: "ab".into(),
        },
        factory: "f".into(),
        failed_at_unix_ms: 1,
    };
    let mut expected = vec![6, 0x00, 0x05, 0x00, 0x00, 0x06, 0x03, 2, 2, 0, b'a', b'b'];
    expected.extend_from_slice(&1u64.to_le_bytes());
    expected.push(b'f');
    assert_eq!(dead_letter_record(&letter), expected);
}
