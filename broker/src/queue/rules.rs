//! What the broker accepts as a topic name, a buffer and a prefetch.

use stubs::BrokerError;

/// The longest topic name: long enough for any descriptive name, short enough to log.
pub const MAX_TOPIC_NAME_LENGTH: usize = 255;
/// The smallest buffer: a topic must hold at least one ready job.
pub const MIN_BUFFER: u32 = 1;
/// The largest buffer: a million tiny jobs are a few tens of MiB, which a lab machine affords.
pub const MAX_BUFFER: u32 = 1_000_000;
/// The smallest prefetch: one call in flight, as in the lab.
pub const MIN_PREFETCH: u32 = 1;
/// The largest prefetch: more calls in flight to one factory than this only queue up inside it.
pub const MAX_PREFETCH: u32 = 1_024;

/// Checks a topic name: 1 to 255 ASCII letters, digits, `.`, `_` or `-`.
pub fn validate_topic_name(topic: &str) -> Result<(), BrokerError> {
    let invalid = |reason: String| BrokerError::InvalidTopic {
        topic: topic.chars().take(MAX_TOPIC_NAME_LENGTH).collect(),
        reason,
    };
    if topic.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if topic.len() > MAX_TOPIC_NAME_LENGTH {
        return Err(invalid(format!(
            "it is {} bytes long; the limit is {MAX_TOPIC_NAME_LENGTH}",
            topic.len()
        )));
    }
    if let Some(bad) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(format!(
            "it contains {bad:?}; allowed are ASCII letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Checks a topic's buffer.
pub fn validate_buffer(buffer: u32) -> Result<(), BrokerError> {
    if (MIN_BUFFER..=MAX_BUFFER).contains(&buffer) {
        Ok(())
    } else {
        Err(BrokerError::InvalidBuffer {
            buffer,
            min: MIN_BUFFER,
            max: MAX_BUFFER,
        })
    }
}

/// Checks a subscription's prefetch.
pub fn validate_prefetch(prefetch: u32) -> Result<(), BrokerError> {
    if (MIN_PREFETCH..=MAX_PREFETCH).contains(&prefetch) {
        Ok(())
    } else {
        Err(BrokerError::InvalidPrefetch {
            prefetch,
            min: MIN_PREFETCH,
            max: MAX_PREFETCH,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_rule() {
        for good in ["multiply", "a", "jobs.v2_b-c", &"x".repeat(255)] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good}");
        }
        for bad in ["", "with space", "slash/", "ünï", &"x".repeat(256)] {
            assert!(
                matches!(
                    validate_topic_name(bad),
                    Err(BrokerError::InvalidTopic { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn buffer_and_prefetch_ranges() {
        assert!(validate_buffer(0).is_err());
        assert_eq!(validate_buffer(1), Ok(()));
        assert_eq!(validate_buffer(1_000_000), Ok(()));
        assert!(validate_buffer(1_000_001).is_err());
        assert!(validate_prefetch(0).is_err());
        assert_eq!(validate_prefetch(1_024), Ok(()));
        assert!(validate_prefetch(1_025).is_err());
    }
}
