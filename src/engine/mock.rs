//! The scripted `mock` model's control: rules and journal per workspace (the HTTP routes
//! under `/palaver/mock/` call these).

use super::Engine;
use crate::backends::mock::RuleView;
use crate::domain::ids::WorkspaceId;
use crate::domain::mock::{MockScript, MAX_RULES};
use crate::error::{Error, FieldError, Result};
use serde_json::Value;

/// Adds the script's rules after the workspace's others; nothing is added when any rule is
/// malformed (a 422 naming the rule and field).
pub fn add_rules(engine: &Engine, ws: &WorkspaceId, script: MockScript) -> Result<Vec<RuleView>> {
    let mut errors = Vec::new();
    script.validate(&mut errors);
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    engine.models.mock().add_rules(ws.as_str(), script.rules).map_err(|held| {
        let msg = format!(
            "A workspace holds at most {MAX_RULES} rules ({held} now); reset them (DELETE /palaver/mock/rules) first"
        );
        Error::invalid(FieldError::body(&["rules".into()], "too_long", msg))
    })
}

pub fn rules(engine: &Engine, ws: &WorkspaceId) -> Vec<RuleView> {
    engine.models.mock().rules(ws.as_str())
}

/// Forgets the workspace's rules and journal.
pub fn reset(engine: &Engine, ws: &WorkspaceId) {
    engine.models.mock().reset(ws.as_str())
}

pub fn journal(engine: &Engine, ws: &WorkspaceId) -> Vec<Value> {
    engine.models.mock().journal(ws.as_str())
}
