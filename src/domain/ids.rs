//! Object ids in the hosted API's shapes (the hosted API's id formats): a prefix and 32
//! lowercase hex digits of a UUIDv7, so ids sort by creation time.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }
    };
}

id_type!(
    /// `ag_…`
    AgentId,
    "ag_"
);
id_type!(
    /// `conv_…`
    ConversationId,
    "conv_"
);

/// The id of one entry of a conversation tree. The prefix tells the entry type, as in the
/// hosted API (`msg_`, `fc_`, `fr_`, `tool_exec_`, `handoff_`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryId(pub String);

impl EntryId {
    pub fn generate(prefix: &str) -> Self {
        Self(format!("{prefix}{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file's id: a UUID with hyphens, as the hosted API's files have (no prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileId(pub String);

impl FileId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A `tool_call_id` in the hosted API's shape: 9 characters `[A-Za-z0-9]`. Mistral's chat
/// API rejects replayed tool calls whose ids have another shape.
pub fn generate_tool_call_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let random = uuid::Uuid::new_v4().into_bytes();
    random.iter().take(9).map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

/// The `tool_call_id` under which a stored entry that has none of its own (an
/// `agent.handoff`) is shown to the model as the call it was: the last 9 characters of the
/// entry id (hex digits of its random part), so the same entry always reads the same.
pub fn tool_call_id_of(entry_id: &EntryId) -> String {
    let id = entry_id.as_str();
    id[id.len().saturating_sub(9)..].to_owned()
}

/// The tenant every stored row belongs to. Derived from the API key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkspaceId(pub String);

impl WorkspaceId {
    /// The workspace of a server that runs without API keys.
    pub fn default_workspace() -> Self {
        Self("default".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_the_prefix_and_32_lowercase_hex_digits() {
        let id = AgentId::generate();

        let hex = id.as_str().strip_prefix("ag_").unwrap();
        assert_eq!(hex.len(), 32);
        assert!(hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }

    #[test]
    fn tool_call_ids_are_nine_alphanumerics() {
        let id = generate_tool_call_id();

        assert_eq!(id.len(), 9);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn ids_generated_later_sort_later() {
        let ids: Vec<AgentId> = (0..200).map(|_| AgentId::generate()).collect();

        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
