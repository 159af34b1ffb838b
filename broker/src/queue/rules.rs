//! What the broker accepts as a topic name, a buffer and a prefetch.

/// Why a topic name, a buffer or a prefetch was refused. The request layer answers the RPC with
/// the matching `BrokerError`, whose text is the same.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The topic name breaks the naming rule.
    #[error("invalid topic name {topic:?}: {reason}")]
    Topic {
        /// The name given, cut to the longest allowed.
        topic: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The buffer is outside the allowed range.
    #[error("invalid buffer {buffer}: it must be from {min} to {max}")]
    Buffer {
        /// The buffer given.
        buffer: u32,
        /// The smallest buffer allowed.
        min: u32,
        /// The largest buffer allowed.
        max: u32,
    },
    /// The prefetch is outside the allowed range.
    #[error("invalid prefetch {prefetch}: it must be from {min} to {max}")]
    Prefetch {
        /// The prefetch given.
        prefetch: u32,
        /// The smallest prefetch allowed.
        min: u32,
        /// The largest prefetch allowed.
        max: u32,
    },
}

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
pub fn validate_topic_name(topic: &str) -> Result<(), ValidationError> {
    let invalid = |reason: String| ValidationError::Topic {
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
pub fn validate_buffer(buffer: u32) -> Result<(), ValidationError> {
    if (MIN_BUFFER..=MAX_BUFFER).contains(&buffer) {
        Ok(())
    } else {
        Err(ValidationError::Buffer {
            buffer,
            min: MIN_BUFFER,
            max: MAX_BUFFER,
        })
    }
}

/// Checks a subscription's prefetch.
pub fn validate_prefetch(prefetch: u32) -> Result<(), ValidationError> {
    if (MIN_PREFETCH..=MAX_PREFETCH).contains(&prefetch) {
        Ok(())
    } else {
        Err(ValidationError::Prefetch {
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
                matches!(validate_topic_name(bad), Err(ValidationError::Topic { .. })),
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

    #[test]
    fn the_errors_read_as_the_rpc_errors_they_become() {
        use stubs::BrokerError;
        let topic = validate_topic_name("a b").unwrap_err();
        let ValidationError::Topic {
            topic: name,
            reason,
        } = topic.clone()
        else {
            panic!("{topic:?}");
        };
        assert_eq!(
            topic.to_string(),
            BrokerError::InvalidTopic {
                topic: name,
                reason
            }
            .to_string()
        );
        assert_eq!(
            validate_buffer(0).unwrap_err().to_string(),
            BrokerError::InvalidBuffer {
                buffer: 0,
                min: MIN_BUFFER,
                max: MAX_BUFFER
            }
            .to_string()
        );
        assert_eq!(
            validate_prefetch(0).unwrap_err().to_string(),
            BrokerError::InvalidPrefetch {
                prefetch: 0,
                min: MIN_PREFETCH,
                max: MAX_PREFETCH
            }
            .to_string()
        );
    }
}
