//! Values as they are read from a gob stream, and typed access to a struct's fields.

use std::fmt;
use std::sync::Arc;

use crate::types::StructDef;

/// A gob value as read. Only what the lab's types need is kept; anything else is read in full
/// (so the stream stays in step) and kept as [`Value::Other`].
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A Go `bool`.
    Bool(bool),
    /// Any Go signed integer (`int`, `int64`, ...).
    Int(i64),
    /// Any Go unsigned integer (`uint`, `uint64`, ...).
    Uint(u64),
    /// A Go `float32` or `float64`.
    Float(f64),
    /// A Go `string` holding UTF-8.
    String(String),
    /// A Go `[]byte`.
    Bytes(Vec<u8>),
    /// A Go struct (or pointer to one: gob sends what a pointer points to).
    Struct(Struct),
    /// A value that was read and skipped.
    Other(OtherKind),
}

/// What a skipped value was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherKind {
    /// A Go slice other than `[]byte`.
    Slice,
    /// A Go array.
    Array,
    /// A Go map.
    Map,
    /// A Go interface value.
    Interface,
    /// A Go `complex64` or `complex128`.
    Complex,
    /// A value with its own encoding: a GobEncoder, BinaryMarshaler or TextMarshaler.
    Opaque,
    /// A Go `string` whose bytes are not UTF-8. Kept apart rather than converted lossily, so
    /// that two different strings never read as the same one.
    NonUtf8String,
}

impl Value {
    /// The kind of value, as a Go programmer would name it, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Uint(_) => "uint",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Bytes(_) => "[]byte",
            Value::Struct(_) => "struct",
            Value::Other(OtherKind::Slice) => "slice",
            Value::Other(OtherKind::Array) => "array",
            Value::Other(OtherKind::Map) => "map",
            Value::Other(OtherKind::Interface) => "interface",
            Value::Other(OtherKind::Complex) => "complex",
            Value::Other(OtherKind::Opaque) => "self-encoded value",
            Value::Other(OtherKind::NonUtf8String) => "non-UTF-8 string",
        }
    }
}

/// A field of a struct value that is not of the kind asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The field holds another kind of value.
    #[error("field {field} is a {found}, not a {expected}")]
    WrongKind {
        /// The field's Go name.
        field: String,
        /// The kind asked for.
        expected: &'static str,
        /// The kind it holds.
        found: &'static str,
    },
    /// The field holds an integer of the other signedness that does not fit.
    #[error("field {field} is out of range for a {expected}")]
    OutOfRange {
        /// The field's Go name.
        field: String,
        /// The kind asked for.
        expected: &'static str,
    },
}

/// A struct value: the fields its sender's type declares, and those the value carries.
///
/// Go's encoder leaves out fields holding their zero value (nested structs excepted), so the
/// accessors answer with the zero value for a field that is absent, as Go's decoder would.
#[derive(Clone)]
pub struct Struct {
    def: Arc<StructDef>,
    /// The fields present, by field number, in the order they were sent.
    present: Vec<(usize, Value)>,
}

impl Struct {
    pub(crate) fn new(def: Arc<StructDef>, present: Vec<(usize, Value)>) -> Self {
        Struct { def, present }
    }

    /// The Go name of the sender's type (empty for an anonymous struct).
    pub fn type_name(&self) -> &str {
        &self.def.name
    }

    /// Whether the sender's type has a field of this name, whether or not the value carries it.
    pub fn declares(&self, name: &str) -> bool {
        self.def.field_index(name).is_some()
    }

    /// Whether the value carries the field: it is declared and was not left out as zero.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The field's value, if the value carries it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let index = self.def.field_index(name)?;
        self.present
            .iter()
            .find(|(number, _)| *number == index)
            .map(|(_, value)| value)
    }

    /// The fields the value carries, by name, in the order they were sent.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.present.iter().filter_map(|(number, value)| {
            let field = self.def.fields.get(*number)?;
            Some((&*field.name, value))
        })
    }

    /// A signed integer field; 0 when absent. An unsigned value that fits is accepted too.
    pub fn int(&self, name: &str) -> Result<i64, FieldError> {
        match self.get(name) {
            None => Ok(0),
            Some(Value::Int(value)) => Ok(*value),
            Some(Value::Uint(value)) => {
                i64::try_from(*value).map_err(|_| out_of_range(name, "int"))
            }
            Some(other) => Err(wrong_kind(name, "int", other)),
        }
    }

    /// An unsigned integer field; 0 when absent. A signed value that fits is accepted too.
    pub fn uint(&self, name: &str) -> Result<u64, FieldError> {
        match self.get(name) {
            None => Ok(0),
            Some(Value::Uint(value)) => Ok(*value),
            Some(Value::Int(value)) => {
                u64::try_from(*value).map_err(|_| out_of_range(name, "uint"))
            }
            Some(other) => Err(wrong_kind(name, "uint", other)),
        }
    }

    /// A boolean field; false when absent.
    pub fn bool(&self, name: &str) -> Result<bool, FieldError> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(value)) => Ok(*value),
            Some(other) => Err(wrong_kind(name, "bool", other)),
        }
    }

    /// A string field; "" when absent.
    pub fn string(&self, name: &str) -> Result<&str, FieldError> {
        match self.get(name) {
            None => Ok(""),
            Some(Value::String(value)) => Ok(value),
            Some(other) => Err(wrong_kind(name, "string", other)),
        }
    }

    /// A struct field; `None` when absent. Go sends a nested struct even when it is zero, so
    /// absent means the sender's type has no such field (see [`Struct::declares`]).
    pub fn struct_(&self, name: &str) -> Result<Option<&Struct>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Struct(value)) => Ok(Some(value)),
            Some(other) => Err(wrong_kind(name, "struct", other)),
        }
    }
}

fn wrong_kind(field: &str, expected: &'static str, found: &Value) -> FieldError {
    FieldError::WrongKind {
        field: field.to_owned(),
        expected,
        found: found.kind(),
    }
}

fn out_of_range(field: &str, expected: &'static str) -> FieldError {
    FieldError::OutOfRange {
        field: field.to_owned(),
        expected,
    }
}

impl PartialEq for Struct {
    /// Two struct values are equal when they have the same type name and carry the same
    /// fields with the same values.
    fn eq(&self, other: &Self) -> bool {
        self.type_name() == other.type_name() && self.fields().eq(other.fields())
    }
}

impl fmt::Debug for Struct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct(self.type_name());
        for (name, value) in self.fields() {
            out.field(name, value);
        }
        out.finish()
    }
}
