//! The lab's struct types as the unit tests describe them to the encoder and the records.

use crate::record::{FieldKind, StructType};

/// `Pair{X, Y int}`, the lab's job.
pub(crate) fn pair_type() -> StructType {
    StructType::new("Pair")
        .field("X", FieldKind::Int)
        .field("Y", FieldKind::Int)
}

/// `PublishRequest{Topic string; Pair Pair}`, a publish as the lab's miner sends it.
pub(crate) fn publish_type() -> StructType {
    StructType::new("PublishRequest")
        .field("Topic", FieldKind::String)
        .field("Pair", FieldKind::Struct(pair_type()))
}
