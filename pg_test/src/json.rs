//! Helpers to look into decoded documents.
//!
//! serde_json is built with `preserve_order` (object keys keep the order the
//! plugin wrote them in) and `arbitrary_precision` (numbers keep their exact
//! text, so `-0` and 64-bit integers survive parsing).

use serde_json::Value;

/// Object keys in document order.
pub fn keys(v: &Value) -> Vec<&str> {
    v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default()
}

/// Panics unless the object's keys are exactly `expected`, in that order.
pub fn assert_keys(v: &Value, expected: &[&str]) {
    assert_eq!(keys(v), expected, "keys (in order) of document {v} differ from the format");
}

/// The `{"name", ...}` entries of a `columns`/`identity`/`pk` array.
pub fn entries<'a>(doc: &'a Value, field: &str) -> &'a [Value] {
    doc.get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("document has no array {field:?}: {doc}"))
}

/// Column names of a `columns`/`identity`/`pk` array, in order.
pub fn names(doc: &Value, field: &str) -> Vec<String> {
    entries(doc, field).iter().map(|e| e["name"].as_str().unwrap_or("<no name>").to_string()).collect()
}

/// The entry for column `name` in `field`, if present.
pub fn entry<'a>(doc: &'a Value, field: &str, name: &str) -> Option<&'a Value> {
    entries(doc, field).iter().find(|e| e["name"] == name)
}

/// The value of column `name` in `field`; panics when the column is absent.
pub fn value<'a>(doc: &'a Value, field: &str, name: &str) -> &'a Value {
    entry(doc, field, name).and_then(|e| e.get("value")).unwrap_or_else(|| panic!("no {field}.{name} value in {doc}"))
}

/// `(name, value)` pairs of `field`, rendered as compact JSON, handy to
/// compare with `assert_eq!`.
pub fn name_values(doc: &Value, field: &str) -> Vec<(String, String)> {
    entries(doc, field)
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or("<no name>").to_string(),
                e.get("value").map(Value::to_string).unwrap_or_default(),
            )
        })
        .collect()
}

/// The exact text of a JSON number (`None` for anything else).
pub fn number_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// True when `v` is a JSON number equal to the integer written in `text`.
pub fn is_integer(v: &Value, text: &str) -> bool {
    let Some(t) = number_text(v) else {
        return false;
    };
    match (t.parse::<i128>(), text.trim().parse::<i128>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// True when `v` represents the float8 written in `text` (PostgreSQL output):
/// the same binary value (sign of zero included) as a JSON number, or the
/// strings "NaN"/"Infinity"/"-Infinity".
pub fn is_float8(v: &Value, text: &str) -> bool {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return v.as_str() == Some(text);
    }
    let (Some(t), Ok(want)) = (number_text(v), text.parse::<f64>()) else {
        return false;
    };
    t.parse::<f64>().is_ok_and(|got| got.to_bits() == want.to_bits())
}

/// Like [`is_float8`] for float4 (compared as `f32`).
pub fn is_float4(v: &Value, text: &str) -> bool {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return v.as_str() == Some(text);
    }
    let (Some(t), Ok(want)) = (number_text(v), text.parse::<f32>()) else {
        return false;
    };
    t.parse::<f32>().is_ok_and(|got| got.to_bits() == want.to_bits())
}
