//! Walking a JSON document with paths, for the tenant parser: the fields of
//! an object with their path (`connectors.lake`), typed accessors that
//! record "expected X, found Y" (never showing a secret's value), unknown
//! fields with a "did you mean" hint, and [`StrictValue`], which refuses a
//! key repeated in one object instead of silently keeping the last.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::errors::Problems;

/// The fields of one JSON object at `path` (empty for the root).
pub(super) struct Fields<'a> {
    pub(super) map: &'a Map<String, Value>,
    pub(super) path: &'a str,
}

impl<'a> Fields<'a> {
    /// A field's value; `null` counts as absent.
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn required_str(
        &self,
        problems: &mut Problems,
        key: &str,
        missing: &str,
        secret: bool,
    ) -> Option<&'a str> {
        let path = child_path(self.path, key);
        match self.get(key) {
            None => {
                problems.add(&path, missing);
                None
            }
            Some(v) => expect_str(problems, &path, v, secret),
        }
    }

    /// `Some(None)` when the value is present but not one of `choices`;
    /// `Some(default)` when absent; `None` when present with the wrong type.
    pub(super) fn optional_choice<T: Copy + Default>(
        &self,
        problems: &mut Problems,
        key: &str,
        choices: &[(&str, T)],
    ) -> Option<Option<T>> {
        let path = child_path(self.path, key);
        let Some(value) = self.get(key) else { return Some(Some(T::default())) };
        let text = expect_str(problems, &path, value, false)?;
        let found = choices.iter().find(|(name, _)| *name == text).map(|(_, v)| *v);
        if found.is_none() {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            problems.add(&path, format!("{text:?} is not one of {}", names.join(", ")));
        }
        Some(found)
    }

    /// One error per field not in `known`; `explain` may give a better
    /// message than the default "unknown field".
    pub(super) fn reject_unknown(
        &self,
        problems: &mut Problems,
        known: &[&str],
        explain: impl Fn(&str) -> Option<String>,
    ) {
        for key in self.map.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let message = explain(key).unwrap_or_else(|| match closest(key, known) {
                Some(near) => format!("unknown field (did you mean {near:?}?)"),
                None => format!("unknown field (expected one of {})", known.join(", ")),
            });
            problems.add(&child_path(self.path, key), message);
        }
    }
}

pub(super) fn child_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (true, false) => format!("[{key:?}]"),
        (false, true) => format!("{parent}.{key}"),
        (false, false) => format!("{parent}[{key:?}]"),
    }
}

/// What a value is, for "expected X, found Y". A secret's value is never
/// shown, only its JSON type.
pub(super) fn describe(value: &Value, secret: bool) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) | Value::Number(_) | Value::String(_) if secret => match value {
            Value::Bool(_) => "a boolean".to_owned(),
            Value::Number(_) => "a number".to_owned(),
            _ => "a string".to_owned(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() > 60 => format!("{:?}…", s.chars().take(60).collect::<String>()),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

pub(super) fn expect_object<'v>(
    problems: &mut Problems,
    path: &str,
    value: &'v Value,
) -> Option<&'v Map<String, Value>> {
    let found = value.as_object();
    if found.is_none() {
        problems.add(path, format!("expected an object, found {}", describe(value, false)));
    }
    found
}

pub(super) fn expect_array<'v>(problems: &mut Problems, path: &str, value: &'v Value) -> Option<&'v Vec<Value>> {
    let found = value.as_array();
    if found.is_none() {
        problems.add(path, format!("expected an array, found {}", describe(value, false)));
    }
    found
}

pub(super) fn expect_str<'v>(problems: &mut Problems, path: &str, value: &'v Value, secret: bool) -> Option<&'v str> {
    let found = value.as_str();
    if found.is_none() {
        problems.add(path, format!("expected a string, found {}", describe(value, secret)));
    }
    found
}

pub(super) fn expect_bool(problems: &mut Problems, path: &str, value: &Value) -> Option<bool> {
    let found = value.as_bool();
    if found.is_none() {
        problems.add(path, format!("expected true or false, found {}", describe(value, false)));
    }
    found
}

/// Any whole number, so that range errors can name negative values too.
pub(super) fn expect_integer(problems: &mut Problems, path: &str, value: &Value) -> Option<i128> {
    let found = value.as_u64().map(i128::from).or_else(|| value.as_i64().map(i128::from));
    if found.is_none() {
        problems.add(path, format!("expected a whole number, found {}", describe(value, false)));
    }
    found
}

/// serde_json's message without its trailing " at line L column C".
pub(super) fn json_reason(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The known name within edit distance 2 of `key`, if there is one.
pub(super) fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// A JSON value parsed like `serde_json::Value`, except that a key repeated
/// within one object is an error: `Value` would silently keep the last one,
/// and a second `"feeds"` would quietly drop the first list.
pub(super) struct StrictValue(pub(super) Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

pub(super) struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(deserializer).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("the key {key:?} appears twice in one object")));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// A whole number within `min..=max`, or a problem saying which bound it
/// crosses (`max_text` names the upper one for a reader).
pub(super) fn in_range(
    problems: &mut Problems,
    path: &str,
    n: i128,
    min: u64,
    max: u64,
    max_text: &str,
) -> Option<u64> {
    if n < i128::from(min) {
        problems.add(path, format!("{n} is below {min}"));
        None
    } else if n > i128::from(max) {
        problems.add(path, format!("{n} is above {max_text}"));
        None
    } else {
        u64::try_from(n).ok()
    }
}
