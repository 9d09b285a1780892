//! The built-in deterministic `echo` model: zero-config runs and users' own tests get
//! answers without any model server.

use crate::domain::models::{Capabilities, ModelCard};

pub const MODEL_NAME: &str = "echo";

/// Fixed creation time of the built-in model (2025-01-01), so listings are reproducible.
const CREATED: i64 = 1_735_689_600;

pub fn card() -> ModelCard {
    ModelCard {
        id: MODEL_NAME.to_owned(),
        object: "model",
        created: CREATED,
        owned_by: "palaver".to_owned(),
        kind: "base",
        capabilities: Capabilities::chat(),
        name: MODEL_NAME.to_owned(),
        description: "Built-in deterministic model: answers with the last user message. Serves every model name \
                      when no upstream is configured."
            .to_owned(),
        max_context_length: 131_072,
        aliases: Vec::new(),
        deprecation: None,
        default_model_temperature: None,
    }
}
