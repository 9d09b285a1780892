//! A field of a PATCH body: absent (keep), `null` (clear) or a value (replace), as
//! the official `UpdateAgentRequest` requires.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Default, PartialEq)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<T> Patch<T> {
    /// The patched value of a nullable field.
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Patch::Absent => current,
            Patch::Null => None,
            Patch::Value(v) => Some(v),
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Patch::Absent)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only called when the key is present (`#[serde(default)]` covers absence).
        Ok(match Option::<T>::deserialize(deserializer)? {
            None => Patch::Null,
            Some(v) => Patch::Value(v),
        })
    }
}

/// Written as the field's JSON: an absent field can only be skipped by its container, so
/// it writes as `null` like a cleared one (the OpenAPI document's defaults are written so).
impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Patch::Absent | Patch::Null => serializer.serialize_none(),
            Patch::Value(v) => serializer.serialize_some(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        name: Patch<String>,
    }

    #[test]
    fn absent_null_and_value_are_told_apart() {
        let absent: Body = serde_json::from_str("{}").unwrap();
        let null: Body = serde_json::from_str(r#"{"name":null}"#).unwrap();
        let value: Body = serde_json::from_str(r#"{"name":"x"}"#).unwrap();

        assert_eq!(absent.name, Patch::Absent);
        assert_eq!(null.name, Patch::Null);
        assert_eq!(value.name, Patch::Value("x".to_owned()));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A member of a PATCH body: absent, `null`, or a value.
        fn member() -> impl Strategy<Value = Option<Option<String>>> {
            prop_oneof![Just(None), Just(Some(None)), ".{0,8}".prop_map(|s| Some(Some(s)))]
        }

        proptest! {
            #[test]
            fn absent_keeps_null_clears_and_a_value_replaces(given in member(), current in proptest::option::of(".{0,8}")) {
                let body = match &given {
                    None => serde_json::json!({}),
                    Some(value) => serde_json::json!({ "name": value }),
                };
                let patch: Body = serde_json::from_value(body).unwrap();

                let expected = match given {
                    None => current.clone(),
                    Some(value) => value,
                };
                prop_assert_eq!(patch.name.apply(current), expected);
            }

            #[test]
            fn a_patch_writes_back_as_the_json_it_was_read_from(value in proptest::option::of(".{0,8}")) {
                let patch: Patch<String> = serde_json::from_value(serde_json::json!(value)).unwrap();

                prop_assert_eq!(serde_json::to_value(&patch).unwrap(), serde_json::json!(value));
            }
        }
    }
}
