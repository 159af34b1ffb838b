//! What a topic is called in JetStream: its stream, its subject, its dead letters' subject.

/// The stream that keeps dead letters, a subject per topic. Not `pairbroker-…`, the prefix of
/// the topics' streams, so that no topic's stream can have its name.
pub const DEAD_LETTERS: &str = "pairbroker_dead_letters";
/// The start of the name of every topic's stream.
const STREAM_PREFIX: &str = "pairbroker-";

/// A topic's name as a stream name and subject token: `_` doubled and `.` (allowed in topic
/// names, not in stream names) written `_d`, so that distinct topics stay distinct.
pub fn escaped(topic: &str) -> String {
    topic.replace('_', "__").replace('.', "_d")
}

/// A name written by [`escaped`], as the topic name it was.
pub fn unescaped(name: &str) -> String {
    let mut topic = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match (c, c == '_') {
            (_, true) => match chars.next() {
                Some('d') => topic.push('.'),
                _ => topic.push('_'),
            },
            (c, false) => topic.push(c),
        }
    }
    topic
}

/// The stream of a topic's jobs.
pub fn stream_name(topic: &str) -> String {
    format!("{STREAM_PREFIX}{}", escaped(topic))
}

/// The topic whose jobs a stream holds, if it holds a topic's jobs.
pub fn topic_of_stream(stream: &str) -> Option<String> {
    stream.strip_prefix(STREAM_PREFIX).map(unescaped)
}

/// The subject a topic's jobs are published to.
pub fn subject(topic: &str) -> String {
    format!("pairbroker.{}", escaped(topic))
}

/// The subject of a topic's dead letters in the [`DEAD_LETTERS`] stream.
pub fn dead_letter_subject(topic: &str) -> String {
    format!("{DEAD_LETTERS}.{}", escaped(topic))
}
