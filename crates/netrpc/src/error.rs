//! What can go wrong reading a gob stream.

use std::io;

/// Why a request or reply could not be read. After any of these but [`ReadError::Closed`]
/// the stream is no longer trustworthy and the connection should be closed, as Go's
/// net/rpc does.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the connection between two messages: the normal end of a connection.
    #[error("the peer closed the connection")]
    Closed,
    /// Reading from the socket failed, or the peer closed it in the middle of a message.
    #[error("reading from the peer: {0}")]
    Io(#[from] io::Error),
    /// A message (or a value with its continuation messages) is larger than
    /// [`Limits::max_message_bytes`](crate::Limits::max_message_bytes).
    #[error("a gob message of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The size the peer announced, or the total so far of a value's messages.
        size: u64,
        /// The limit in force.
        limit: usize,
    },
    /// The peer defined more types than
    /// [`Limits::max_type_definitions`](crate::Limits::max_type_definitions).
    #[error("the peer defined more than {limit} types")]
    TooManyTypes {
        /// The limit in force.
        limit: usize,
    },
    /// A value is nested deeper than [`Limits::max_nesting`](crate::Limits::max_nesting).
    #[error("a value is nested deeper than {limit} levels")]
    TooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// The bytes are not a gob stream as Go writes it, or not a net/rpc header.
    #[error("malformed gob stream: {0}")]
    Malformed(#[from] Malformed),
}

/// What was wrong with a malformed message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// A message announced zero bytes: Go's encoder never writes one.
    #[error("an empty message")]
    EmptyMessage,
    /// A value needs more bytes than its message holds.
    #[error("a value runs past the end of its message")]
    Truncated,
    /// An unsigned integer announced more than eight bytes.
    #[error("an integer of more than eight bytes")]
    IntegerTooLong,
    /// A string, byte slice or name announced more bytes than its message holds.
    #[error("a length of {length} with only {remaining} bytes left in the message")]
    LengthPastEnd {
        /// The announced length.
        length: u64,
        /// The bytes left in the message.
        remaining: usize,
    },
    /// A value refers to a type id that was never defined.
    #[error("unknown type id {0}")]
    UnknownType(i64),
    /// A type definition reuses an id that is already defined or reserved.
    #[error("type id {0} defined twice or reserved")]
    DuplicateType(i64),
    /// A type definition is not a valid gob `wireType`.
    #[error("bad type definition: {0}")]
    BadTypeDefinition(&'static str),
    /// A type definition message holds bytes after the definition.
    #[error("bytes after a type definition")]
    TrailingBytes,
    /// A struct value names a field number its type does not have.
    #[error("field number {field} of a struct with {fields} fields")]
    FieldOutOfRange {
        /// The field number reached.
        field: u64,
        /// How many fields the type has.
        fields: usize,
    },
    /// A top-level value that is not a struct must start with a zero field delta.
    #[error("a non-zero field delta before a single value")]
    SingletonDelta,
    /// An array value's length differs from its type's.
    #[error("an array of {found} elements where its type has {expected}")]
    ArrayLength {
        /// The length of the array type.
        expected: u64,
        /// The length sent.
        found: u64,
    },
    /// An interface value continues in the next message at a place Go's encoder never
    /// splits one (only right after a type definition).
    #[error("an interface value split across messages before any type definition")]
    UnexpectedSplit,
    /// The message is a gob value but not the net/rpc header expected.
    #[error("bad net/rpc header: {0}")]
    Header(String),
}
