//! Wire types (serde) shared by every layer: agents, conversations, entries, events, tools,
//! completion arguments, ids and timestamps. No I/O here; validation that needs no store
//! lives beside the types.

pub mod agents;
#[cfg(test)]
pub mod arbitrary;
pub mod chat_completions;
pub mod chunks;
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

/// Declares wire structs that share fields: each struct gets the `head` fields, then its
/// own, then the `tail` fields (if any), so a shared field and its serde and schema
/// attributes are written once (see the entry types, the two conversation shapes and the
/// error bodies). Field order is wire order, and each field ends with a comma.
//
// Not a shared struct under `#[serde(flatten)]`: utoipa would document it as an `allOf`,
// `deny_unknown_fields` does not work with it, and serde would go through a map.
macro_rules! shared_fields {
    (head $head:tt tail $tail:tt $($(#[$attr:meta])* pub struct $name:ident $own:tt)*) => {
        $($crate::domain::shared_fields!(@struct $head $own $tail $(#[$attr])* $name);)*
    };
    (head $head:tt $($(#[$attr:meta])* pub struct $name:ident $own:tt)*) => {
        $($crate::domain::shared_fields!(@struct $head $own {} $(#[$attr])* $name);)*
    };
    (@struct { $($head:tt)* } { $($own:tt)* } { $($tail:tt)* } $(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        pub struct $name {
            $($head)*
            $($own)*
            $($tail)*
        }
    };
}
pub(crate) use shared_fields;

/// Declares a string with one allowed value (a chunk's `type`, a message's `role`) as a
/// one-variant enum: it decodes from that value only (`null` included is refused) and
/// documents as an enum of it. Fields of such a type take `#[schema(inline)]`.
macro_rules! literal {
    // `tt`, not `literal`: utoipa does not see through the invisible group a `literal`
    // fragment comes wrapped in, and would document the variant's own name.
    ($(#[$attr:meta])* $name:ident = $value:tt) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            #[default]
            #[serde(rename = $value)]
            Value,
        }
    };
}
pub(crate) use literal;
