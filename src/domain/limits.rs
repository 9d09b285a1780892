//! Bounds on what one request may carry, beyond the body's byte limit: each list and each
//! free-text field has one, and going past it is a 422 naming the field. They keep a single
//! request from making every later turn of a conversation expensive (a history of 10,000
//! tool definitions is sent to the model on every round). The README lists them.

use crate::error::{FieldError, Loc};
use serde_json::{Map, Value};

pub const MAX_TOOLS: usize = 128;
pub const MAX_HANDOFFS: usize = 32;
/// Entries in one start, append or restart.
pub const MAX_INPUTS: usize = 1_000;
pub const MAX_TOOL_CONFIRMATIONS: usize = 128;
pub const MAX_METADATA_KEYS: usize = 64;
pub const MAX_METADATA_KEY_CHARS: usize = 256;
/// Names and model names.
pub const MAX_NAME_CHARS: usize = 256;
pub const MAX_DESCRIPTION_CHARS: usize = 4_096;
pub const MAX_INSTRUCTIONS_CHARS: usize = 200_000;

fn at(path: &[Loc], name: &str) -> Vec<Loc> {
    let mut loc = path.to_vec();
    loc.push(name.into());
    loc
}

/// At most `max` items in the list `name`.
pub fn list<T>(items: Option<&[T]>, max: usize, path: &[Loc], name: &str, errors: &mut Vec<FieldError>) {
    if items.is_some_and(|items| items.len() > max) {
        let msg = format!("List should have at most {max} items");
        errors.push(FieldError::body(&at(path, name), "too_long", msg));
    }
}

/// At most `max` characters in the string `name`.
pub fn string(value: Option<&str>, max: usize, path: &[Loc], name: &str, errors: &mut Vec<FieldError>) {
    // Bytes first: a string can only have more characters than bytes never.
    if value.is_some_and(|v| v.len() > max && v.chars().count() > max) {
        let msg = format!("String should have at most {max} characters");
        errors.push(FieldError::body(&at(path, name), "string_too_long", msg));
    }
}

/// At most `MAX_METADATA_KEYS` keys of at most `MAX_METADATA_KEY_CHARS` characters.
pub fn metadata(metadata: Option<&Map<String, Value>>, path: &[Loc], errors: &mut Vec<FieldError>) {
    let Some(metadata) = metadata else { return };
    if metadata.len() > MAX_METADATA_KEYS {
        let msg = format!("Metadata should have at most {MAX_METADATA_KEYS} keys");
        errors.push(FieldError::body(&at(path, "metadata"), "too_long", msg));
    }
    if let Some(key) = metadata.keys().find(|k| k.chars().count() > MAX_METADATA_KEY_CHARS) {
        let msg = format!("Metadata keys should have at most {MAX_METADATA_KEY_CHARS} characters");
        let mut loc = at(path, "metadata");
        loc.push(key.as_str().into());
        errors.push(FieldError::body(&loc, "string_too_long", msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_names_its_field_and_allows_exactly_its_maximum() {
        let mut errors = Vec::new();
        list(Some(&[0; 3][..]), 3, &[], "tools", &mut errors);
        string(Some("ééé"), 3, &[], "name", &mut errors);
        assert!(errors.is_empty(), "at the bound: {errors:?}");

        list(Some(&[0; 4][..]), 3, &[], "tools", &mut errors);
        string(Some("éééé"), 3, &["nested".into()], "name", &mut errors);

        assert_eq!(errors[0].loc, vec![Loc::from("body"), "tools".into()]);
        assert_eq!(errors[0].kind, "too_long");
        assert_eq!(errors[1].loc, vec![Loc::from("body"), "nested".into(), "name".into()]);
        assert_eq!(errors[1].kind, "string_too_long");
    }
}
