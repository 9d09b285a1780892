//! Wire types (serde) shared by every layer: agents, conversations, entries, events, tools,
//! completion arguments, ids and timestamps. No I/O here; validation that needs no store
//! lives beside the types.

pub mod agents;
#[cfg(test)]
pub mod arbitrary;
pub mod chat_completions;
pub mod completion;
pub mod conversations;
pub mod entries;
pub mod events;
pub mod files;
pub mod ids;
pub mod limits;
pub mod mock;
pub mod models;
pub mod patch;
pub mod time;
pub mod tools;
