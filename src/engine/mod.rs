//! The rules of palaver, written once for every transport and store: agent versions and
//! aliases, conversations as entry trees, and the run loop that calls the model. Knows
//! nothing about HTTP or SQL.

pub mod agents;
pub mod completions;
pub mod context;
pub mod conversations;
pub mod fold;
pub mod history;
pub mod run;
pub mod tools;
