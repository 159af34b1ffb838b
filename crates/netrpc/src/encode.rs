//! Writing a gob stream: each struct type is defined the first time a value of it is sent,
//! then values refer to it by id. Output matches Go's encoder byte for byte, given the same
//! type ids.

use std::collections::HashMap;

use crate::record::{FieldKind, FieldValue, Record, StructType};
use crate::types::{TypeId, BOOL, INT, STRING, UINT};
use crate::wire::{put_bytes, put_int, put_uint};

/// The first id we give a type. Go numbers its first user type 65 (ids up to 64 are gob's),
/// so a fresh Go process sending the same types would use the same ids as we do.
const FIRST_ID: TypeId = 65;

// Field numbers in gob's own description of a type (`wireType`, `structType`, ...), written
// as deltas from the previous field number, which starts at -1.
const WIRE_TYPE_STRUCT_T: u64 = 3;
const FIRST_FIELD: u64 = 1;
const NEXT_FIELD: u64 = 1;
const END_OF_STRUCT: u64 = 0;

/// One direction of a connection, written as one gob stream.
#[derive(Debug)]
pub(crate) struct GobEncoder {
    ids: HashMap<StructType, TypeId>,
    next_id: TypeId,
}

impl GobEncoder {
    pub(crate) fn new() -> Self {
        GobEncoder {
            ids: HashMap::new(),
            next_id: FIRST_ID,
        }
    }

    /// Appends to `out` the definitions of the record's types not sent yet, then the record:
    /// what one call of Go's `Encode` writes.
    pub(crate) fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        let id = self.define(record.struct_type(), out);
        let mut message = Vec::new();
        put_int(&mut message, id.into());
        self.put_struct(record, &mut message);
        put_message(out, &message);
    }

    /// The type's id, after writing its definition and those of its field types if new.
    fn define(&mut self, ty: &StructType, out: &mut Vec<u8>) -> TypeId {
        if let Some(&id) = self.ids.get(ty) {
            return id;
        }
        // Like Go: number the type and its new field types first (a definition names its
        // fields' ids), then send the definitions in that same order.
        let mut new_types = Vec::new();
        self.number(ty, &mut new_types);
        for new_type in &new_types {
            let mut message = Vec::new();
            let id = self.id_of(new_type);
            put_int(&mut message, -i64::from(id));
            self.put_definition(new_type, id, &mut message);
            put_message(out, &message);
        }
        self.id_of(ty)
    }

    fn number(&mut self, ty: &StructType, new_types: &mut Vec<StructType>) {
        if self.ids.contains_key(ty) {
            return;
        }
        self.ids.insert(ty.clone(), self.next_id);
        self.next_id += 1;
        new_types.push(ty.clone());
        for field in &ty.fields {
            if let FieldKind::Struct(inner) = &field.kind {
                self.number(inner, new_types);
            }
        }
    }

    /// The id of a type already numbered.
    fn id_of(&self, ty: &StructType) -> TypeId {
        // Every caller numbers the type first; 0 (no type) would only make the peer refuse
        // the message, never corrupt our own state.
        self.ids.get(ty).copied().unwrap_or_default()
    }

    fn field_id(&self, kind: &FieldKind) -> TypeId {
        match kind {
            FieldKind::Bool => BOOL,
            FieldKind::Int => INT,
            FieldKind::Uint => UINT,
            FieldKind::String => STRING,
            FieldKind::Struct(inner) => self.id_of(inner),
        }
    }

    /// A gob `wireType` holding a `structType{CommonType{Name, Id}, Field []fieldType}`.
    /// Zero fields are left out, as Go's encoder does: an anonymous struct has no name.
    fn put_definition(&self, ty: &StructType, id: TypeId, out: &mut Vec<u8>) {
        put_uint(out, WIRE_TYPE_STRUCT_T);
        put_uint(out, FIRST_FIELD); // structType.CommonType
        if ty.name.is_empty() {
            put_uint(out, FIRST_FIELD + NEXT_FIELD); // straight to CommonType.Id
        } else {
            put_uint(out, FIRST_FIELD); // CommonType.Name
            put_bytes(out, ty.name.as_bytes());
            put_uint(out, NEXT_FIELD); // CommonType.Id
        }
        put_int(out, id.into());
        put_uint(out, END_OF_STRUCT);
        if !ty.fields.is_empty() {
            put_uint(out, NEXT_FIELD); // structType.Field
            put_uint(out, ty.fields.len() as u64);
            for field in &ty.fields {
                put_uint(out, FIRST_FIELD); // fieldType.Name
                put_bytes(out, field.name.as_bytes());
                put_uint(out, NEXT_FIELD); // fieldType.Id
                put_int(out, self.field_id(&field.kind).into());
                put_uint(out, END_OF_STRUCT);
            }
        }
        put_uint(out, END_OF_STRUCT); // structType
        put_uint(out, END_OF_STRUCT); // wireType
    }

    /// A struct value: for each field sent, the delta from the previous field number and the
    /// value. Like Go, zero scalars are left out and nested structs always sent.
    fn put_struct(&self, record: &Record, out: &mut Vec<u8>) {
        let mut previous: i64 = -1;
        for (number, (field, value)) in (0i64..).zip(record.fields()) {
            let sent = match (&field.kind, value) {
                (FieldKind::Struct(_), Some(FieldValue::Struct(inner))) => {
                    put_uint(out, (number - previous) as u64);
                    self.put_struct(inner, out);
                    true
                }
                (FieldKind::Struct(ty), _) => {
                    put_uint(out, (number - previous) as u64);
                    self.put_struct(&Record::new(ty), out);
                    true
                }
                (_, Some(scalar)) => put_scalar(scalar, (number - previous) as u64, out),
                (_, None) => false,
            };
            if sent {
                previous = number;
            }
        }
        put_uint(out, END_OF_STRUCT);
    }
}

/// Writes a scalar field unless it is zero; says whether it did.
fn put_scalar(value: &FieldValue, delta: u64, out: &mut Vec<u8>) -> bool {
    let is_zero = match value {
        FieldValue::Bool(value) => !value,
        FieldValue::Int(value) => *value == 0,
        FieldValue::Uint(value) => *value == 0,
        FieldValue::String(value) => value.is_empty(),
        FieldValue::Struct(_) => false,
    };
    if is_zero {
        return false;
    }
    put_uint(out, delta);
    match value {
        FieldValue::Bool(value) => put_uint(out, u64::from(*value)),
        FieldValue::Int(value) => put_int(out, *value),
        FieldValue::Uint(value) => put_uint(out, *value),
        FieldValue::String(value) => put_bytes(out, value.as_bytes()),
        FieldValue::Struct(_) => {}
    }
    true
}

fn put_message(out: &mut Vec<u8>, message: &[u8]) {
    put_uint(out, message.len() as u64);
    out.extend_from_slice(message);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fixtures::pair_type;
    use crate::reader::GobReader;
    use crate::value::Value;
    use crate::Limits;

    fn subscription_type() -> StructType {
        StructType::new("Subscription")
            .field("Topic", FieldKind::String)
            .field("FactoryAddress", FieldKind::String)
            .field("Callback", FieldKind::String)
    }

    fn mixed_type() -> StructType {
        StructType::new("Mixed")
            .field("Flag", FieldKind::Bool)
            .field("Count", FieldKind::Uint)
            .field("Pair", FieldKind::Struct(pair_type()))
            .field("Name", FieldKind::String)
    }

    /// Encodes the records on one stream and reads them back.
    fn round_trip(records: &[Record]) -> Vec<Value> {
        let mut encoder = GobEncoder::new();
        let mut bytes = Vec::new();
        for record in records {
            encoder.encode(record, &mut bytes);
        }
        let mut reader = GobReader::new(bytes.as_slice(), Limits::default());
        futures::executor::block_on(async {
            let mut values = Vec::new();
            while let Some(value) = reader.read_value().await.expect("our own bytes read back") {
                values.push(value);
            }
            values
        })
    }

    fn as_struct(value: &Value) -> &crate::Struct {
        match value {
            Value::Struct(value) => value,
            other => panic!("a struct, not {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn pairs_and_subscriptions_read_back_as_sent(
            x in any::<i64>(),
            y in any::<i64>(),
            topic in ".*",
            address in "[0-9.:]{0,21}",
            callback in "\\PC*",
        ) {
            let pair = Record::new(&pair_type()).set("X", x)?.set("Y", y)?;
            let subscription = Record::new(&subscription_type())
                .set("Topic", topic.as_str())?
                .set("FactoryAddress", address.as_str())?
                .set("Callback", callback.as_str())?;
            // Twice each: the second time the types are already defined.
            let values = round_trip(&[pair.clone(), subscription.clone(), pair, subscription]);
            prop_assert_eq!(values.len(), 4);
            for value in [&values[0], &values[2]] {
                let pair = as_struct(value);
                prop_assert_eq!(pair.type_name(), "Pair");
                prop_assert_eq!((pair.int("X"), pair.int("Y")), (Ok(x), Ok(y)));
            }
            for value in [&values[1], &values[3]] {
                let subscription = as_struct(value);
                prop_assert_eq!(subscription.string("Topic"), Ok(topic.as_str()));
                prop_assert_eq!(subscription.string("FactoryAddress"), Ok(address.as_str()));
                prop_assert_eq!(subscription.string("Callback"), Ok(callback.as_str()));
            }
        }

        #[test]
        fn every_field_kind_reads_back_as_sent(
            flag in any::<bool>(),
            count in any::<u64>(),
            x in any::<i64>(),
            name in "\\PC{0,40}",
            set_pair in any::<bool>(),
        ) {
            let mut mixed = Record::new(&mixed_type())
                .set("Flag", flag)?
                .set("Count", count)?
                .set("Name", name.clone())?;
            if set_pair {
                mixed = mixed.set("Pair", Record::new(&pair_type()).set("X", x)?)?;
            }
            let values = round_trip(&[mixed]);
            let mixed = as_struct(&values[0]);
            prop_assert_eq!(mixed.bool("Flag"), Ok(flag));
            prop_assert_eq!(mixed.uint("Count"), Ok(count));
            prop_assert_eq!(mixed.string("Name"), Ok(name.as_str()));
            // A nested struct is always sent, even when it was never set.
            let pair = mixed.struct_("Pair")?.expect("the nested struct is sent");
            prop_assert_eq!(pair.int("X"), Ok(if set_pair { x } else { 0 }));
            prop_assert_eq!(pair.int("Y"), Ok(0));
        }
    }

    #[test]
    fn zero_scalars_are_left_out_as_go_does() {
        let values = round_trip(&[Record::new(&mixed_type())]);
        let mixed = as_struct(&values[0]);
        let sent: Vec<&str> = mixed.fields().map(|(name, _)| name).collect();
        assert_eq!(sent, ["Pair"]);
    }

    #[test]
    fn a_type_is_defined_once_per_stream() {
        let pair = Record::new(&pair_type());
        let mut encoder = GobEncoder::new();
        let (mut first, mut second) = (Vec::new(), Vec::new());
        encoder.encode(&pair, &mut first);
        encoder.encode(&pair, &mut second);
        // The value alone: length, type id 65, the end of the struct.
        assert_eq!(second, [0x03, 0xff, 0x82, 0x00]);
        assert!(first.ends_with(&second) && first.len() > second.len());
    }
}
