//! The rules of palaver, written once for every transport and store: agent versions and
//! aliases now, the conversation run loop next. Knows nothing about HTTP or SQL.

pub mod agents;
