//! Decoding one gob value from the messages that carry it.
//!
//! A value normally fits in one message. The exception is an interface value whose concrete
//! type is new on the stream: Go's encoder then ends the message right after that type's
//! definition and goes on with the value in the next one. The decoder asks for that next
//! message with [`DecodeError::NeedMore`]; the reader fetches it and decodes again from the
//! start, after rolling back the types defined by the attempt.
//!
//! Work is bounded by the input: every element of a slice, array or map starts on a byte of
//! input and takes at least that byte, so a count can make us loop no longer than the bytes
//! received; and nothing is allocated from a count, only from bytes present.

use crate::error::Malformed;
use crate::types::{
    DefineError, StructDef, TypeId, TypeTable, WireType, BOOL, BYTES, COMPLEX, FLOAT, INT,
    INTERFACE, STRING, UINT,
};
use crate::value::{OtherKind, Struct, Value};
use crate::wire::Cursor;

/// Why a value could not be decoded from the messages given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    Malformed(Malformed),
    TooDeep,
    TooManyTypes,
    /// The value continues in a message not yet read.
    NeedMore,
}

impl From<Malformed> for DecodeError {
    fn from(malformed: Malformed) -> Self {
        DecodeError::Malformed(malformed)
    }
}

impl From<DefineError> for DecodeError {
    fn from(error: DefineError) -> Self {
        match error {
            DefineError::Malformed(malformed) => DecodeError::Malformed(malformed),
            DefineError::TooMany => DecodeError::TooManyTypes,
        }
    }
}

/// Decodes the value that starts `messages[0]` with its type id. Types defined on the way
/// (inside interface values) are added to `types`, also when decoding fails.
pub(crate) fn decode_value(
    types: &mut TypeTable,
    messages: &[Vec<u8>],
    max_nesting: usize,
) -> Result<Value, DecodeError> {
    let first = messages.first().map(Vec::as_slice).unwrap_or_default();
    let mut decoder = Decoder {
        types,
        messages,
        index: 0,
        input: Cursor::new(first),
        max_nesting,
    };
    let id = decoder.input.int()?;
    decoder.top_level(id, 1)
}

struct Decoder<'t, 'm> {
    types: &'t mut TypeTable,
    messages: &'m [Vec<u8>],
    /// Which message `input` reads.
    index: usize,
    input: Cursor<'m>,
    max_nesting: usize,
}

impl Decoder<'_, '_> {
    /// A value as one call of Go's `Encode` writes it: a struct's fields, or a zero field delta
    /// and a single value.
    fn top_level(&mut self, id: i64, depth: usize) -> Result<Value, DecodeError> {
        let id = self.top_level_prefix(id)?;
        self.value(id, depth)
    }

    /// Skips what [`Decoder::top_level`] reads.
    fn skip_top_level(&mut self, id: i64, depth: usize) -> Result<(), DecodeError> {
        let id = self.top_level_prefix(id)?;
        self.skip(id, depth)
    }

    /// Checks the type id of a top-level value and reads the zero field delta that comes
    /// before one that is not a struct.
    fn top_level_prefix(&mut self, id: i64) -> Result<TypeId, DecodeError> {
        let id = TypeId::try_from(id).map_err(|_| Malformed::UnknownType(id))?;
        if !matches!(self.types.get(id), Some(WireType::Struct(_))) && self.input.uint()? != 0 {
            return Err(Malformed::SingletonDelta.into());
        }
        Ok(id)
    }

    fn enter(&self, depth: usize) -> Result<(), DecodeError> {
        if depth > self.max_nesting {
            return Err(DecodeError::TooDeep);
        }
        Ok(())
    }

    fn wire(&self, id: TypeId) -> Result<WireType, DecodeError> {
        self.types
            .get(id)
            .cloned()
            .ok_or(DecodeError::Malformed(Malformed::UnknownType(id.into())))
    }

    /// Reads a value of type `id` at nesting `depth`, keeping what [`Value`] keeps.
    fn value(&mut self, id: TypeId, depth: usize) -> Result<Value, DecodeError> {
        Ok(match id {
            BOOL => Value::Bool(self.input.uint()? != 0),
            INT => Value::Int(self.input.int()?),
            UINT => Value::Uint(self.input.uint()?),
            FLOAT => Value::Float(self.input.float()?),
            BYTES => Value::Bytes(self.input.bytes()?.to_vec()),
            STRING => match std::str::from_utf8(self.input.bytes()?) {
                Ok(text) => Value::String(text.to_owned()),
                Err(_) => Value::Other(OtherKind::NonUtf8String),
            },
            COMPLEX => {
                self.skip(id, depth)?;
                Value::Other(OtherKind::Complex)
            }
            INTERFACE => {
                self.skip(id, depth)?;
                Value::Other(OtherKind::Interface)
            }
            _ => match self.wire(id)? {
                WireType::Struct(def) => {
                    self.enter(depth)?;
                    let present = self.fields(&def, depth, true)?;
                    Value::Struct(Struct::new(def, present))
                }
                other => {
                    self.skip(id, depth)?;
                    Value::Other(match other {
                        WireType::Array { .. } => OtherKind::Array,
                        WireType::Slice { .. } => OtherKind::Slice,
                        WireType::Map { .. } => OtherKind::Map,
                        WireType::Opaque | WireType::Struct(_) => OtherKind::Opaque,
                    })
                }
            },
        })
    }

    /// Reads a value of type `id` at nesting `depth` and drops it.
    fn skip(&mut self, id: TypeId, depth: usize) -> Result<(), DecodeError> {
        match id {
            BOOL | INT | UINT | FLOAT => _ = self.input.uint()?,
            BYTES | STRING => _ = self.input.bytes()?,
            COMPLEX => {
                self.input.uint()?;
                self.input.uint()?;
            }
            INTERFACE => {
                self.enter(depth)?;
                self.interface(depth)?;
            }
            _ => {
                let wire = self.wire(id)?;
                if !matches!(wire, WireType::Opaque) {
                    self.enter(depth)?;
                }
                match wire {
                    WireType::Array { elem, len } => {
                        let count = self.input.uint()?;
                        if count != len {
                            return Err(Malformed::ArrayLength {
                                expected: len,
                                found: count,
                            }
                            .into());
                        }
                        self.elements(count, |decoder| decoder.skip(elem, depth + 1))?;
                    }
                    WireType::Slice { elem } => {
                        let count = self.input.uint()?;
                        self.elements(count, |decoder| decoder.skip(elem, depth + 1))?;
                    }
                    WireType::Map { key, elem } => {
                        let count = self.input.uint()?;
                        self.elements(count, |decoder| {
                            decoder.skip(key, depth + 1)?;
                            decoder.skip(elem, depth + 1)
                        })?;
                    }
                    WireType::Struct(def) => _ = self.fields(&def, depth, false)?,
                    WireType::Opaque => _ = self.input.bytes()?,
                }
            }
        }
        Ok(())
    }

    /// Reads `count` elements. Each must start on a byte of input, as in Go's decoder: that
    /// bounds the loop by the bytes received, whatever count the peer announced.
    fn elements(
        &mut self,
        count: u64,
        mut element: impl FnMut(&mut Self) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        for _ in 0..count {
            if self.input.is_empty() {
                return Err(Malformed::Truncated.into());
            }
            element(self)?;
        }
        Ok(())
    }

    /// Reads a struct's fields: field-number deltas and values, up to a zero delta or, as Go
    /// allows, the end of the message. Kept fields are returned; skipped ones are not.
    fn fields(
        &mut self,
        def: &StructDef,
        depth: usize,
        keep: bool,
    ) -> Result<Vec<(usize, Value)>, DecodeError> {
        let mut present = Vec::new();
        // One past the last field number read: numbering starts at -1.
        let mut position: u64 = 0;
        while !self.input.is_empty() {
            let delta = self.input.uint()?;
            if delta == 0 {
                break;
            }
            position = position.saturating_add(delta);
            let index = usize::try_from(position - 1).unwrap_or(usize::MAX);
            let Some(field) = def.fields.get(index) else {
                return Err(Malformed::FieldOutOfRange {
                    field: position - 1,
                    fields: def.fields.len(),
                }
                .into());
            };
            if keep {
                let value = self.value(field.id, depth + 1)?;
                present.push((index, value));
            } else {
                self.skip(field.id, depth + 1)?;
            }
        }
        Ok(present)
    }

    /// Skips an interface value: the concrete type's name (empty for nil), the definitions of
    /// types new to the stream, the concrete type id, a byte count, and the value as `Encode`
    /// writes it. Go's decoder reads the value rather than trusting the count, and so do we:
    /// with nested interfaces, Go's encoder writes a count that covers only part of it.
    fn interface(&mut self, depth: usize) -> Result<(), DecodeError> {
        let name = self.input.bytes()?;
        if name.is_empty() {
            return Ok(());
        }
        let mut defined = false;
        let id = loop {
            if self.input.is_empty() {
                // Go's encoder ends a message here only after writing a type definition.
                if !defined {
                    return Err(Malformed::UnexpectedSplit.into());
                }
                self.next_message()?;
            }
            let id = self.input.int()?;
            if id >= 0 {
                break id;
            }
            let defined_id = id.checked_neg().ok_or(Malformed::DuplicateType(id))?;
            self.types.define(defined_id, &mut self.input)?;
            defined = true;
            // Within the message, a definition is followed by the byte count of what follows.
            if !self.input.is_empty() {
                self.input.uint()?;
            }
        };
        self.input.uint()?;
        self.skip_top_level(id, depth + 1)
    }

    fn next_message(&mut self) -> Result<(), DecodeError> {
        let next = self.index + 1;
        let message = self.messages.get(next).ok_or(DecodeError::NeedMore)?;
        self.index = next;
        self.input = Cursor::new(message);
        Ok(())
    }
}
