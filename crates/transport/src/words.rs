//! Our words for what a person reads in a log line or an error:
//! - a failed call: what happened to the connection or the call, and its root cause, rather
//!   than tarpc's names for its internals ("could not ready the transport");
//! - a duration, [`Rounded`].

use std::error::Error;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tarpc::client::RpcError;

/// What went wrong with a call, as a person reads it: e.g. "the connection broke: the other
/// side reset it".
pub fn describe(error: &RpcError) -> String {
    match error {
        RpcError::Shutdown => "the connection was closed".to_owned(),
        RpcError::Send(source) => format!("the call could not be sent: {}", cause(&**source)),
        RpcError::Channel(source) => format!("the connection broke: {}", cause(source)),
        RpcError::DeadlineExceeded => "no answer before the deadline".to_owned(),
        RpcError::Server(error) => format!("the other side could not serve the call: {error}"),
    }
}

/// The innermost cause of `error`, in words for the failures a connection meets.
pub fn cause(error: &(dyn Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    match io_kind(innermost) {
        Some(io::ErrorKind::ConnectionReset) => "the other side reset it".to_owned(),
        Some(io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe) => {
            "the other side closed it".to_owned()
        }
        Some(io::ErrorKind::ConnectionRefused) => "the connection was refused".to_owned(),
        Some(io::ErrorKind::TimedOut) => "it timed out".to_owned(),
        _ => without_os_code(&innermost.to_string()),
    }
}

/// The kind of `error` if it is an I/O error: as it is, wrapped in another, or shared in an
/// `Arc` as tarpc keeps it.
fn io_kind(error: &(dyn Error + 'static)) -> Option<io::ErrorKind> {
    if let Some(error) = error.downcast_ref::<io::Error>() {
        // A codec wraps the socket's error in one of its own, of kind `Other`.
        return match error.get_ref() {
            Some(inner) if error.kind() == io::ErrorKind::Other => {
                io_kind(inner).or(Some(error.kind()))
            }
            _ => Some(error.kind()),
        };
    }
    let shared = error.downcast_ref::<Arc<dyn Error + Send + Sync>>()?;
    io_kind(&**shared)
}

/// `Connection reset by peer (os error 104)` without its number, which tells a person nothing
/// the words do not.
fn without_os_code(text: &str) -> String {
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text.to_owned(),
    }
}

/// A duration as a person reads it: `0.2ms`, `250ms`, `3.0s`, `2m05s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rounded(pub Duration);

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if self.0.subsec_nanos() == 0 && millis < 60_000 {
            write!(f, "{}s", self.0.as_secs())
        } else if millis < 10 {
            write!(f, "{:.1}ms", self.0.as_secs_f64() * 1e3)
        } else if millis < 1_000 {
            write!(f, "{millis}ms")
        } else if millis < 60_000 {
            write!(f, "{:.1}s", self.0.as_secs_f64())
        } else {
            let seconds = self.0.as_secs();
            write!(f, "{}m{:02}s", seconds / 60, seconds % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_connection_is_said_in_our_words() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let error = RpcError::Channel(tarpc::ChannelError::Read(Arc::new(reset)));
        assert_eq!(
            describe(&error),
            "the connection broke: the other side reset it"
        );
    }

    #[test]
    fn every_kind_of_failure_has_a_sentence_without_tarpcs_words() {
        let closed = RpcError::Send(Box::new(io::Error::from(io::ErrorKind::BrokenPipe)));
        assert_eq!(
            describe(&closed),
            "the call could not be sent: the other side closed it"
        );
        assert_eq!(describe(&RpcError::Shutdown), "the connection was closed");
        assert_eq!(
            describe(&RpcError::DeadlineExceeded),
            "no answer before the deadline"
        );
        let other = io::Error::other("Bad file descriptor (os error 9)");
        assert_eq!(cause(&other), "Bad file descriptor");
    }

    #[test]
    fn durations_are_rounded_to_what_a_person_reads() {
        let cases = [
            (Duration::from_micros(150), "0.1ms"),
            (Duration::from_micros(1_500), "1.5ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_nanos(3_025_558_949), "3.0s"),
            (Duration::from_millis(59_940), "59.9s"),
            (Duration::from_secs(3), "3s"),
            (Duration::from_secs(125), "2m05s"),
        ];
        for (duration, text) in cases {
            assert_eq!(Rounded(duration).to_string(), text);
        }
    }
}
