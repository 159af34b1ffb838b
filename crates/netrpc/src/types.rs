//! The types a peer has defined on its gob stream, and how a definition (a gob `wireType`)
//! is read.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Malformed;
use crate::wire::Cursor;

/// A gob type id. Go's is an `int32`.
pub(crate) type TypeId = i32;

// The ids every gob stream knows without a definition.
pub(crate) const BOOL: TypeId = 1;
pub(crate) const INT: TypeId = 2;
pub(crate) const UINT: TypeId = 3;
pub(crate) const FLOAT: TypeId = 4;
pub(crate) const BYTES: TypeId = 5;
pub(crate) const STRING: TypeId = 6;
pub(crate) const COMPLEX: TypeId = 7;
pub(crate) const INTERFACE: TypeId = 8;

/// The lowest id a peer may define; those below belong to gob itself.
pub(crate) const FIRST_USER_ID: TypeId = 64;

/// A user-defined type as its definition describes it.
#[derive(Clone, Debug)]
pub(crate) enum WireType {
    Array {
        elem: TypeId,
        len: u64,
    },
    Slice {
        elem: TypeId,
    },
    Struct(Arc<StructDef>),
    Map {
        key: TypeId,
        elem: TypeId,
    },
    /// A type with its own encoding (GobEncoder, BinaryMarshaler, TextMarshaler): a count of
    /// bytes and the bytes.
    Opaque,
}

/// A struct type as the peer defined it: its Go name and its fields, in field-number order.
#[derive(Debug)]
pub(crate) struct StructDef {
    pub(crate) name: Arc<str>,
    pub(crate) fields: Vec<FieldDef>,
}

/// A field's name is shared by every value that carries the field, so that a value whose
/// struct type has long field names costs a pointer per field, not a copy of each name.
#[derive(Debug)]
pub(crate) struct FieldDef {
    pub(crate) name: Arc<str>,
    pub(crate) id: TypeId,
}

impl StructDef {
    pub(crate) fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|field| &*field.name == name)
    }
}

/// Why a type could not be defined.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DefineError {
    Malformed(Malformed),
    TooMany,
}

impl From<Malformed> for DefineError {
    fn from(malformed: Malformed) -> Self {
        DefineError::Malformed(malformed)
    }
}

/// The types received on one stream, in the order they were defined.
#[derive(Debug)]
pub(crate) struct TypeTable {
    types: HashMap<TypeId, WireType>,
    order: Vec<TypeId>,
    max: usize,
}

/// A point to roll the table back to, when a value has to be read again from its start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark(usize);

impl TypeTable {
    pub(crate) fn new(max: usize) -> Self {
        TypeTable {
            types: HashMap::new(),
            order: Vec::new(),
            max,
        }
    }

    pub(crate) fn get(&self, id: TypeId) -> Option<&WireType> {
        self.types.get(&id)
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark(self.order.len())
    }

    pub(crate) fn rollback(&mut self, mark: Mark) {
        for id in self.order.drain(mark.0..) {
            self.types.remove(&id);
        }
    }

    /// Reads the definition of type `id` (a `wireType` value) and remembers it.
    pub(crate) fn define(&mut self, id: i64, input: &mut Cursor<'_>) -> Result<(), DefineError> {
        let Some(id) = TypeId::try_from(id).ok().filter(|&id| id >= FIRST_USER_ID) else {
            return Err(Malformed::DuplicateType(id).into());
        };
        if self.types.contains_key(&id) {
            return Err(Malformed::DuplicateType(id.into()).into());
        }
        if self.order.len() >= self.max {
            return Err(DefineError::TooMany);
        }
        let wire = read_wire_type(input)?;
        self.types.insert(id, wire);
        self.order.push(id);
        Ok(())
    }
}

/// Reads a struct of a gob-internal type: `field` is called with each field number present
/// and reads that field's value. Like Go, a struct ends at a zero delta or at the end of the
/// message.
fn read_fields(
    input: &mut Cursor<'_>,
    field_count: u64,
    mut field: impl FnMut(u64, &mut Cursor<'_>) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    // One past the last field number read: field numbers start at -1, so that the first
    // delta of 1 reaches field 0.
    let mut position: u64 = 0;
    while !input.is_empty() {
        let delta = input.uint()?;
        if delta == 0 {
            break;
        }
        position = position.saturating_add(delta);
        if position > field_count {
            return Err(Malformed::BadTypeDefinition("field number out of range"));
        }
        field(position - 1, input)?;
    }
    Ok(())
}

/// The parts of a definition common to all kinds: gob's `CommonType{Name string; Id int}`.
fn read_common(input: &mut Cursor<'_>) -> Result<Arc<str>, Malformed> {
    let mut name: Arc<str> = Arc::from("");
    read_fields(input, 2, |number, input| {
        match number {
            0 => name = Arc::from(utf8(input.bytes()?)?),
            // The id repeated inside the definition; Go does not check it, and neither do we.
            _ => _ = input.int()?,
        }
        Ok(())
    })?;
    Ok(name)
}

fn utf8(bytes: &[u8]) -> Result<&str, Malformed> {
    std::str::from_utf8(bytes).map_err(|_| Malformed::BadTypeDefinition("a name is not UTF-8"))
}

/// A type id named inside a definition: positive and within Go's `int32`.
fn type_ref(input: &mut Cursor<'_>) -> Result<TypeId, Malformed> {
    TypeId::try_from(input.int()?)
        .ok()
        .filter(|&id| id > 0)
        .ok_or(Malformed::BadTypeDefinition(
            "a type reference out of range",
        ))
}

/// Field numbers of gob's `wireType`.
const ARRAY_T: u64 = 0;
const SLICE_T: u64 = 1;
const STRUCT_T: u64 = 2;
const MAP_T: u64 = 3;
const WIRE_TYPE_FIELDS: u64 = 7;

fn read_wire_type(input: &mut Cursor<'_>) -> Result<WireType, Malformed> {
    let mut found: Option<WireType> = None;
    read_fields(input, WIRE_TYPE_FIELDS, |number, input| {
        if found.is_some() {
            return Err(Malformed::BadTypeDefinition("more than one kind"));
        }
        found = Some(match number {
            ARRAY_T => read_array(input)?,
            SLICE_T => read_slice(input)?,
            STRUCT_T => WireType::Struct(Arc::new(read_struct(input)?)),
            MAP_T => read_map(input)?,
            // GobEncoderT, BinaryMarshalerT, TextMarshalerT: a CommonType alone.
            _ => {
                read_fields(input, 1, |_, input| read_common(input).map(drop))?;
                WireType::Opaque
            }
        });
        Ok(())
    })?;
    found.ok_or(Malformed::BadTypeDefinition("no kind"))
}

fn read_array(input: &mut Cursor<'_>) -> Result<WireType, Malformed> {
    let (mut elem, mut len) = (None, 0);
    read_fields(input, 3, |number, input| {
        match number {
            0 => _ = read_common(input)?,
            1 => elem = Some(type_ref(input)?),
            _ => {
                len = u64::try_from(input.int()?)
                    .map_err(|_| Malformed::BadTypeDefinition("a negative array length"))?
            }
        }
        Ok(())
    })?;
    let elem = elem.ok_or(Malformed::BadTypeDefinition(
        "an array without an element type",
    ))?;
    Ok(WireType::Array { elem, len })
}

fn read_slice(input: &mut Cursor<'_>) -> Result<WireType, Malformed> {
    let mut elem = None;
    read_fields(input, 2, |number, input| {
        match number {
            0 => _ = read_common(input)?,
            _ => elem = Some(type_ref(input)?),
        }
        Ok(())
    })?;
    let elem = elem.ok_or(Malformed::BadTypeDefinition(
        "a slice without an element type",
    ))?;
    Ok(WireType::Slice { elem })
}

fn read_map(input: &mut Cursor<'_>) -> Result<WireType, Malformed> {
    let (mut key, mut elem) = (None, None);
    read_fields(input, 3, |number, input| {
        match number {
            0 => _ = read_common(input)?,
            1 => key = Some(type_ref(input)?),
            _ => elem = Some(type_ref(input)?),
        }
        Ok(())
    })?;
    match (key, elem) {
        (Some(key), Some(elem)) => Ok(WireType::Map { key, elem }),
        _ => Err(Malformed::BadTypeDefinition(
            "a map without key or element type",
        )),
    }
}

fn read_struct(input: &mut Cursor<'_>) -> Result<StructDef, Malformed> {
    let mut name: Arc<str> = Arc::from("");
    let mut fields = Vec::new();
    read_fields(input, 2, |number, input| {
        match number {
            0 => name = read_common(input)?,
            _ => {
                // Each field takes at least one byte, so the count cannot make us reserve
                // more than the message holds; we reserve nothing up front anyway.
                let count = input.uint()?;
                for _ in 0..count {
                    if input.is_empty() {
                        return Err(Malformed::Truncated);
                    }
                    fields.push(read_field(input)?);
                }
            }
        }
        Ok(())
    })?;
    Ok(StructDef { name, fields })
}

fn read_field(input: &mut Cursor<'_>) -> Result<FieldDef, Malformed> {
    let (mut name, mut id) = (None, None);
    read_fields(input, 2, |number, input| {
        match number {
            0 => name = Some(Arc::from(utf8(input.bytes()?)?)),
            _ => id = Some(type_ref(input)?),
        }
        Ok(())
    })?;
    match (name, id) {
        (Some(name), Some(id)) => Ok(FieldDef { name, id }),
        // Go refuses a struct with an unnamed field when it is used; we do when it arrives.
        (None, _) => Err(Malformed::BadTypeDefinition("a field without a name")),
        (_, None) => Err(Malformed::BadTypeDefinition("a field without a type")),
    }
}
