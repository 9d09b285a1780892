//! Tools the server runs (DESIGN decision 7), behind one trait.
//!
//! A connector is an MCP server the operator names in the config file (`[[connector]]`). It
//! serves the `connector` tools whose `connector_id` is its `id`, and a built-in tool type
//! (`web_search`, `code_interpreter`, `image_generation`, `document_library`, …) when its
//! `id` is that type's name: palaver has no search engine or sandbox of its own, so the
//! operator plugs one in. A built-in tool with no connector configured is not offered to
//! the model.
//!
//! The engine offers a connector's tools to the model as functions, runs the calls it
//! makes (recorded as `tool.execution` entries), or — for the names listed in the tool's
//! `tool_configuration.requires_confirmation` — stops with a pending `function.call` until
//! the client allows or denies it.

pub mod mcp;

use crate::config::ConnectorConfig;
use crate::domain::tools::{Tool, ToolType};
use crate::error::Error;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// A tool a connector offers, as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTool {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Map<String, Value>,
}

/// What a tool call returned.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// The text the model reads as the tool's answer.
    pub text: String,
    /// The tool reported a failure (the model still sees `text`, so it can react).
    pub is_error: bool,
}

#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// The tools offered, with the credentials of the agent's tool definition if any.
    async fn tools(&self, authorization: Option<&str>) -> Result<Arc<Vec<ServerTool>>, Error>;

    async fn call(
        &self,
        authorization: Option<&str>,
        name: &str,
        arguments: Map<String, Value>,
    ) -> Result<ToolOutput, Error>;
}

/// The configured connectors by id.
#[derive(Default, Clone)]
pub struct Connectors {
    by_id: HashMap<String, Arc<dyn Connector>>,
}

impl Connectors {
    pub fn from_config(configs: &[ConnectorConfig]) -> anyhow::Result<Self> {
        let mut by_id: HashMap<String, Arc<dyn Connector>> = HashMap::new();
        for config in configs {
            let connector = mcp::McpConnector::new(config)?;
            anyhow::ensure!(
                by_id.insert(config.id.clone(), Arc::new(connector)).is_none(),
                "connector `{}` is configured twice",
                config.id
            );
        }
        Ok(Connectors { by_id })
    }

    /// Which tools the server runs, for the start-up log.
    pub fn describe(&self) -> String {
        let builtins = [
            ToolType::WebSearch,
            ToolType::WebSearchPremium,
            ToolType::CodeInterpreter,
            ToolType::ImageGeneration,
            ToolType::DocumentLibrary,
        ];
        let (served, missing): (Vec<&str>, Vec<&str>) =
            builtins.iter().map(|t| t.as_str()).partition(|id| self.by_id.contains_key(*id));
        let mut connectors: Vec<&str> = self.by_id.keys().map(String::as_str).collect();
        connectors.sort_unstable();
        let mut text = if served.is_empty() {
            "built-in tools: none available".to_owned()
        } else {
            format!("built-in tools through MCP connectors: {}", served.join(", "))
        };
        if !missing.is_empty() {
            text += &format!(
                "; not offered to the model (no [[connector]] with that id in PALAVER_CONFIG): {}",
                missing.join(", ")
            );
        }
        if !connectors.is_empty() {
            text += &format!("; connectors: {}", connectors.join(", "));
        }
        text
    }

    /// Adds a connector under `id` (tests and embedders).
    pub fn insert(&mut self, id: impl Into<String>, connector: Arc<dyn Connector>) {
        self.by_id.insert(id.into(), connector);
    }

    /// The connector that runs `tool`: `None` for client functions and for built-in tools
    /// nobody configured; an error for a `connector` tool naming an unknown connector.
    pub fn for_tool(&self, tool: &Tool) -> Result<Option<Arc<dyn Connector>>, Error> {
        let id = match tool.kind {
            ToolType::Function => return Ok(None),
            ToolType::Connector => tool.connector_id.as_deref().unwrap_or_default(),
            builtin => builtin.as_str(),
        };
        match self.by_id.get(id) {
            Some(connector) => Ok(Some(connector.clone())),
            None if tool.kind == ToolType::Connector => Err(Error::RunFailed {
                status: 400,
                message: format!(
                    "Connector `{id}` is not configured on this server (see `[[connector]]` in PALAVER_CONFIG)."
                ),
            }),
            None => Ok(None),
        }
    }
}

/// The credentials a `connector` tool carries for its server.
pub fn authorization(tool: &Tool) -> Option<&str> {
    tool.authorization.as_ref().map(|a| a.value.as_str())
}

/// Whether `tool_configuration` lets the model see the tool `name`.
pub fn exposes(tool: &Tool, name: &str) -> bool {
    let Some(config) = &tool.tool_configuration else {
        return true;
    };
    let listed = |names: &Option<Vec<String>>| names.as_ref().is_some_and(|n| n.iter().any(|n| n == name));
    (config.include.is_none() || listed(&config.include)) && !listed(&config.exclude)
}

/// Whether a call to `name` must wait for the client's confirmation.
pub fn requires_confirmation(tool: &Tool, name: &str) -> bool {
    tool.tool_configuration
        .as_ref()
        .and_then(|c| c.requires_confirmation.as_ref())
        .is_some_and(|names| names.iter().any(|n| n == name))
}
