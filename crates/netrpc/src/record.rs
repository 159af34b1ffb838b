//! Values to send: a struct type described as Go would declare it, and a [`Record`] of that
//! type, checked against it as it is built so that encoding cannot fail.

use std::fmt;

/// A Go struct type to send: its name and its fields, in declaration order.
///
/// gob matches fields by name, so the names must be those of the receiver's Go type; the
/// type's own name is informational.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StructType {
    /// The Go type's name, e.g. `JobReport`; empty for an anonymous struct.
    pub name: String,
    /// The fields, in declaration order.
    pub fields: Vec<FieldType>,
}

/// One field of a [`StructType`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldType {
    /// The Go field name, e.g. `Result`.
    pub name: String,
    /// What the field holds.
    pub kind: FieldKind,
}

/// What a field holds. Go's `int` and `int64` are both [`FieldKind::Int`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// A Go `bool`.
    Bool,
    /// A Go signed integer.
    Int,
    /// A Go unsigned integer.
    Uint,
    /// A Go `string`.
    String,
    /// A nested Go struct.
    Struct(StructType),
}

impl StructType {
    /// A struct type with no fields yet.
    pub fn new(name: impl Into<String>) -> Self {
        StructType {
            name: name.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a field after those already declared.
    pub fn field(mut self, name: impl Into<String>, kind: FieldKind) -> Self {
        self.fields.push(FieldType {
            name: name.into(),
            kind,
        });
        self
    }
}

/// A value for one field of a [`Record`].
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// For a [`FieldKind::Bool`] field.
    Bool(bool),
    /// For a [`FieldKind::Int`] field.
    Int(i64),
    /// For a [`FieldKind::Uint`] field.
    Uint(u64),
    /// For a [`FieldKind::String`] field.
    String(String),
    /// For a [`FieldKind::Struct`] field, of that struct type.
    Struct(Record),
}

impl From<bool> for FieldValue {
    fn from(value: bool) -> Self {
        FieldValue::Bool(value)
    }
}

impl From<i64> for FieldValue {
    fn from(value: i64) -> Self {
        FieldValue::Int(value)
    }
}

impl From<u64> for FieldValue {
    fn from(value: u64) -> Self {
        FieldValue::Uint(value)
    }
}

impl From<&str> for FieldValue {
    fn from(value: &str) -> Self {
        FieldValue::String(value.to_owned())
    }
}

impl From<String> for FieldValue {
    fn from(value: String) -> Self {
        FieldValue::String(value)
    }
}

impl From<Record> for FieldValue {
    fn from(value: Record) -> Self {
        FieldValue::Struct(value)
    }
}

impl FieldValue {
    fn kind_name(&self) -> &'static str {
        match self {
            FieldValue::Bool(_) => "bool",
            FieldValue::Int(_) => "int",
            FieldValue::Uint(_) => "uint",
            FieldValue::String(_) => "string",
            FieldValue::Struct(_) => "struct",
        }
    }
}

/// Why a value cannot be set on a [`Record`]: a mistake of the calling code, found before
/// anything is sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The struct type has no field of that name.
    #[error("{type_name} has no field {field}")]
    UnknownField {
        /// The struct type's name.
        type_name: String,
        /// The field asked for.
        field: String,
    },
    /// The value is not of the field's kind, or is a struct of another type.
    #[error("field {field} holds a {expected}, not a {found}")]
    WrongKind {
        /// The field's name.
        field: String,
        /// The field's kind.
        expected: String,
        /// The value's kind.
        found: String,
    },
}

/// A struct value of a [`StructType`], ready to send. Fields not set hold their zero value.
#[derive(Clone, PartialEq)]
pub struct Record {
    ty: StructType,
    /// One slot per field of `ty`, in field order.
    values: Vec<Option<FieldValue>>,
}

impl Record {
    /// A value of `ty` with every field zero.
    pub fn new(ty: &StructType) -> Self {
        Record {
            ty: ty.clone(),
            values: vec![None; ty.fields.len()],
        }
    }

    /// Sets a field, checking that the type has it and that the value is of its kind.
    pub fn set(mut self, field: &str, value: impl Into<FieldValue>) -> Result<Self, BuildError> {
        let value = value.into();
        let Some(index) = self.ty.fields.iter().position(|f| f.name == field) else {
            return Err(BuildError::UnknownField {
                type_name: self.ty.name.clone(),
                field: field.to_owned(),
            });
        };
        let expected = &self.ty.fields[index].kind;
        let fits = match (expected, &value) {
            (FieldKind::Bool, FieldValue::Bool(_))
            | (FieldKind::Int, FieldValue::Int(_))
            | (FieldKind::Uint, FieldValue::Uint(_))
            | (FieldKind::String, FieldValue::String(_)) => true,
            (FieldKind::Struct(ty), FieldValue::Struct(record)) => record.ty == *ty,
            _ => false,
        };
        if !fits {
            let found = match &value {
                FieldValue::Struct(record) => describe(&record.ty),
                other => other.kind_name().to_owned(),
            };
            return Err(BuildError::WrongKind {
                field: field.to_owned(),
                expected: kind_name(expected),
                found,
            });
        }
        self.values[index] = Some(value);
        Ok(self)
    }

    /// A record from values already in field order and of each field's kind.
    pub(crate) fn from_field_values(ty: &StructType, values: Vec<Option<FieldValue>>) -> Self {
        Record {
            ty: ty.clone(),
            values,
        }
    }

    /// The record's type.
    pub fn struct_type(&self) -> &StructType {
        &self.ty
    }

    /// The fields with their values, set or zero, in field order.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&FieldType, Option<&FieldValue>)> {
        self.ty
            .fields
            .iter()
            .zip(self.values.iter().map(Option::as_ref))
    }
}

fn kind_name(kind: &FieldKind) -> String {
    match kind {
        FieldKind::Bool => "bool".to_owned(),
        FieldKind::Int => "int".to_owned(),
        FieldKind::Uint => "uint".to_owned(),
        FieldKind::String => "string".to_owned(),
        FieldKind::Struct(ty) => describe(ty),
    }
}

/// A struct type by its name and field names: two types of one name may differ in fields.
fn describe(ty: &StructType) -> String {
    let fields: Vec<&str> = ty.fields.iter().map(|field| field.name.as_str()).collect();
    format!("struct {}{{{}}}", ty.name, fields.join(", "))
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct(&self.ty.name);
        for (field, value) in self.fields() {
            if let Some(value) = value {
                out.field(&field.name, value);
            }
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{pair_type, publish_type};

    #[test]
    fn a_field_the_type_lacks_is_refused() {
        let error = Record::new(&pair_type()).set("Z", 1i64).unwrap_err();
        assert_eq!(
            error,
            BuildError::UnknownField {
                type_name: "Pair".into(),
                field: "Z".into()
            }
        );
    }

    #[test]
    fn a_value_of_another_kind_is_refused() {
        let error = Record::new(&pair_type()).set("X", "three").unwrap_err();
        assert!(matches!(error, BuildError::WrongKind { .. }), "{error}");
    }

    #[test]
    fn a_struct_of_another_type_is_refused() {
        let request = publish_type();
        let other = StructType::new("Pair").field("X", FieldKind::Int);
        let error = Record::new(&request)
            .set("Pair", Record::new(&other))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "field Pair holds a struct Pair{X, Y}, not a struct Pair{X}"
        );
    }
}
