//! Values keyed by a named enum ([`memtrace_common::Named`]), serialized as one JSON object
//! with a key for every value of the enum: the keys, the schema and every renderer follow the
//! enum, so none of them keeps its own list.

use std::{borrow::Cow, marker::PhantomData};

use memtrace_common::Named;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Serialize, Serializer, ser::SerializeMap as _};

/// One `T` per value of `E`, in `E::ALL` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByName<E, T> {
    values: Vec<T>,
    keys: PhantomData<E>,
}

impl<E: Named, T> ByName<E, T> {
    /// The value for each key.
    pub fn from_fn(mut value: impl FnMut(E) -> T) -> Self {
        Self {
            values: E::ALL.iter().map(|&key| value(key)).collect(),
            keys: PhantomData,
        }
    }

    /// The value for `key`.
    pub fn get(&self, key: E) -> &T
    where
        E: PartialEq,
    {
        let index = E::ALL.iter().position(|&k| k == key).unwrap_or_default();
        &self.values[index]
    }

    /// `(key, value)` in `E::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (E, &T)> {
        E::ALL.iter().copied().zip(&self.values)
    }
}

impl<E: Named, T: Serialize> Serialize for ByName<E, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.values.len()))?;
        for (key, value) in self.iter() {
            map.serialize_entry(key.name(), value)?;
        }
        map.end()
    }
}

impl<E: Named, T: JsonSchema> JsonSchema for ByName<E, T> {
    fn schema_name() -> Cow<'static, str> {
        format!("ByName_{}", T::schema_name()).into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let value = generator.subschema_for::<T>();
        let properties: serde_json::Map<String, serde_json::Value> = E::ALL
            .iter()
            .map(|key| (key.name().to_owned(), value.clone().into()))
            .collect();
        let required: Vec<&str> = E::ALL.iter().map(|key| key.name()).collect();
        json_schema!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        })
    }
}

/// One value of a named enum, serialized as its name; the schema lists every name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Name<E>(pub E);

impl<E: Named> Serialize for Name<E> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.name())
    }
}

impl<E: Named> JsonSchema for Name<E> {
    fn schema_name() -> Cow<'static, str> {
        let path = std::any::type_name::<E>();
        path.rsplit("::").next().unwrap_or(path).to_owned().into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = E::ALL.iter().map(|value| value.name()).collect();
        json_schema!({ "type": "string", "enum": names })
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::events::stall::ReclaimKind;

    use super::*;

    #[test]
    fn every_key_in_enum_order() {
        let by_kind = ByName::from_fn(|kind: ReclaimKind| kind as u32 * 10);
        assert_eq!(
            serde_json::to_string(&by_kind).unwrap(),
            r#"{"direct":0,"memcg":10}"#
        );
        let schema = serde_json::to_value(schemars::schema_for!(ByName<ReclaimKind, u32>)).unwrap();
        assert_eq!(schema["required"], serde_json::json!(["direct", "memcg"]));
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(
            serde_json::to_string(&Name(ReclaimKind::Memcg)).unwrap(),
            r#""memcg""#
        );
    }
}
