//! The bounds a gob reader keeps against a broken or hostile peer.
//!
//! Go's own decoder trusts its peer: it accepts messages up to a gigabyte, any number of type
//! definitions and, for values it keeps, any depth. The lab's traffic is a handful of small
//! structs, so ours can be far tighter without refusing anything a lab program sends.

/// The largest gob message the lab's peers send is a few hundred bytes (a request header, or
/// a `Subscription` with three strings). 64 KiB leaves room for long topic names and addresses
/// while keeping what one connection can make us buffer small.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A Go net/rpc client defines one type for its request header and one or two per argument
/// type (`PublishRequest` and `Pair`), once per connection. 64 covers a client that calls
/// every method of the lab and then some; past it a peer is flooding us with definitions,
/// which we would otherwise keep for the life of the connection.
pub const DEFAULT_MAX_TYPE_DEFINITIONS: usize = 64;

/// The lab's deepest value is `PublishRequest` holding a `Pair`: two levels. Eight leaves room
/// for a client's own wrapping while keeping the decoder's recursion, a few stack frames per
/// level, shallow.
pub const DEFAULT_MAX_NESTING: usize = 8;

/// How much a gob stream may ask of its reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes in one gob message (after its length prefix). A value that continues
    /// across messages, as an interface value with a new concrete type does, counts all of
    /// them. A larger length prefix is refused before anything is allocated.
    pub max_message_bytes: usize,
    /// The most type definitions a peer may send on one connection.
    pub max_type_definitions: usize,
    /// The deepest a composite value (struct, slice, array, map, interface) may be nested,
    /// the top-level value counting as one. Keep it small: each level is a recursive call.
    pub max_nesting: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_type_definitions: DEFAULT_MAX_TYPE_DEFINITIONS,
            max_nesting: DEFAULT_MAX_NESTING,
        }
    }
}
