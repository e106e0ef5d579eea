//! JSON helpers shared by the fuzz targets (each target is its own binary,
//! so they include this file with `#[path]`).

use serde_json::Value;

/// Whether a JSON value holds a non-integer number anywhere: such values
/// do not survive a serde_json round trip exactly (no `float_roundtrip`),
/// so the targets leave them out of their round-trip assertions.
pub fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(members) => members.values().any(has_float),
        _ => false,
    }
}
