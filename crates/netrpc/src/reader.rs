//! Reading a gob stream: length-prefixed messages, the type definitions among them, and
//! the values they carry, within [`Limits`].

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, BufReader};

use crate::decode::{decode_value, DecodeError};
use crate::error::{Malformed, ReadError};
use crate::limits::Limits;
use crate::types::{DefineError, TypeTable};
use crate::value::Value;
use crate::wire::{big_endian, uint_byte_count, Cursor, MAX_UINT_BYTES};

/// One direction of a connection, read as one gob stream: the types the peer defined stay
/// known for the values that follow.
pub(crate) struct GobReader<R> {
    input: BufReader<R>,
    types: TypeTable,
    limits: Limits,
}

impl<R: AsyncRead + Unpin> GobReader<R> {
    pub(crate) fn new(reader: R, limits: Limits) -> Self {
        GobReader {
            input: BufReader::new(reader),
            types: TypeTable::new(limits.max_type_definitions),
            limits,
        }
    }

    /// Reads the next value, with the type definitions sent before it. `Ok(None)` when the
    /// peer closed the stream before the first byte of it.
    ///
    /// Not cancel-safe: dropping the future part way loses the stream's place.
    pub(crate) async fn read_value(&mut self) -> Result<Option<Value>, ReadError> {
        let mut at_boundary = true;
        loop {
            let Some(message) = self.read_message(at_boundary).await? else {
                return Ok(None);
            };
            at_boundary = false;
            let mut input = Cursor::new(&message);
            let id = input.int()?;
            if id >= 0 {
                return self.read_rest(message).await.map(Some);
            }
            // A message of its own holds one type definition and nothing else.
            let defined = id.checked_neg().ok_or(Malformed::DuplicateType(id))?;
            self.types
                .define(defined, &mut input)
                .map_err(|error| self.define_error(error))?;
            if !input.is_empty() {
                return Err(Malformed::TrailingBytes.into());
            }
        }
    }

    /// Decodes the value that `first` starts, reading the messages it continues into.
    async fn read_rest(&mut self, first: Vec<u8>) -> Result<Value, ReadError> {
        let mut total = first.len();
        let mut messages = vec![first];
        loop {
            let mark = self.types.mark();
            match decode_value(&mut self.types, &messages, self.limits.max_nesting) {
                Ok(value) => return Ok(value),
                Err(DecodeError::NeedMore) => {
                    // The next attempt starts over and defines those types again. Each
                    // continuation follows a definition, so the attempts are bounded by
                    // the type limit, and their bytes by the message limit.
                    self.types.rollback(mark);
                    let next = self.read_message(false).await?.ok_or_else(unexpected_eof)?;
                    total = total.saturating_add(next.len());
                    if total > self.limits.max_message_bytes {
                        return Err(ReadError::TooLarge {
                            size: total as u64,
                            limit: self.limits.max_message_bytes,
                        });
                    }
                    messages.push(next);
                }
                Err(DecodeError::Malformed(malformed)) => return Err(malformed.into()),
                Err(DecodeError::TooManyTypes) => {
                    return Err(self.define_error(DefineError::TooMany))
                }
                Err(DecodeError::TooDeep) => {
                    return Err(ReadError::TooDeep {
                        limit: self.limits.max_nesting,
                    })
                }
            }
        }
    }

    fn define_error(&self, error: DefineError) -> ReadError {
        match error {
            DefineError::Malformed(malformed) => malformed.into(),
            DefineError::TooMany => ReadError::TooManyTypes {
                limit: self.limits.max_type_definitions,
            },
        }
    }

    /// Reads one length-prefixed message. `Ok(None)` at the end of the stream, where
    /// `end_allowed`. The length is checked before anything is allocated, and the buffer
    /// grows only with the bytes that arrive.
    async fn read_message(&mut self, end_allowed: bool) -> Result<Option<Vec<u8>>, ReadError> {
        let first = match self.input.read_u8().await {
            Ok(byte) => byte,
            Err(error) if end_allowed && error.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(None)
            }
            Err(error) => return Err(error.into()),
        };
        let size = match uint_byte_count(first)? {
            None => u64::from(first),
            Some(count) => {
                let mut digits = [0u8; MAX_UINT_BYTES];
                self.input.read_exact(&mut digits[..count]).await?;
                big_endian(&digits[..count])
            }
        };
        if size > self.limits.max_message_bytes as u64 {
            return Err(ReadError::TooLarge {
                size,
                limit: self.limits.max_message_bytes,
            });
        }
        if size == 0 {
            return Err(Malformed::EmptyMessage.into());
        }
        let mut message = Vec::new();
        (&mut self.input)
            .take(size)
            .read_to_end(&mut message)
            .await?;
        if message.len() as u64 != size {
            return Err(unexpected_eof().into());
        }
        Ok(Some(message))
    }
}

fn unexpected_eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the peer closed the connection inside a message",
    )
}
