//! Tools the server runs (DESIGN decision 7), behind one trait.
//!
//! The built-in tool types are native: palaver runs them itself as soon as their section
//! of the config file is present (`[web_search]` and `[web_search_premium]` search through
//! a provider). A connector is an MCP server the operator names in the config file
//! (`[[connector]]`). It serves the `connector` tools whose `connector_id` is its `id`, and
//! replaces the native tool whose type is its `id`. A built-in tool that nothing serves is
//! not offered to the model.
//!
//! The engine offers a connector's tools to the model as functions, runs the calls it
//! makes (recorded as `tool.execution` entries), or — for the names listed in the tool's
//! `tool_configuration.requires_confirmation` — stops with a pending `function.call` until
//! the client allows or denies it.

pub mod code;
pub mod images;
pub mod mcp;
pub mod sandbox;
pub mod search;

use crate::config::FileConfig;
use crate::domain::entries::execution_info;
use crate::domain::ids::{ConversationId, WorkspaceId};
use crate::domain::tools::{Tool, ToolType};
use crate::error::{Code, Error};
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

impl ServerTool {
    /// A function taking one required string parameter (the native tools' shape).
    pub fn with_text_parameter(name: &str, description: &str, parameter: &str, about: &str) -> Self {
        let parameters = serde_json::json!({
            "type": "object",
            "properties": {parameter: {"type": "string", "description": about}},
            "required": [parameter]
        });
        ServerTool {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            parameters: parameters.as_object().cloned().unwrap_or_default(),
        }
    }
}

/// The key held by the environment variable a config section names (`api_key_env`).
pub fn key_from_env(section: &str, variable: Option<&str>) -> anyhow::Result<Option<String>> {
    variable
        .map(|variable| {
            std::env::var(variable).map_err(|_| {
                anyhow::anyhow!("[{section}] api_key_env names `{variable}`, which is not set in the environment")
            })
        })
        .transpose()
}

/// What a tool call returned: the text the model reads, and what the turn keeps beside it
/// (more `info` for the `tool.execution` entry, files the tool produced, sources it
/// found), so code execution, image generation and search fit without another reshaping.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolOutput {
    /// The text the model reads as the tool's answer.
    pub text: String,
    /// The tool reported a failure (the model still sees `text`, so it can react).
    pub is_error: bool,
    /// Members added to the entry's `info` beside `tool_call_id`, `output` and `is_error`
    /// (e.g. the code and its output of a code run).
    pub info: Map<String, Value>,
    /// Files the tool stored (generated images, files written by code): the answer that
    /// follows shows them as `tool_file` chunks.
    pub files: Vec<ProducedFile>,
    /// Sources the tool found, which the answer may cite as `tool_reference` chunks.
    pub sources: Vec<Source>,
}

/// A file a tool stored through the Files API.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducedFile {
    pub file_id: String,
    pub file_name: String,
    /// The extension the hosted API reports (`png`, `csv`, …).
    pub file_type: String,
}

/// A source a tool found (a search hit, a document chunk).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Source {
    pub url: Option<String>,
    pub title: String,
    pub snippet: Option<String>,
    pub favicon: Option<String>,
    pub date: Option<String>,
    /// Who found it (the search provider or engine), as the citation map's `source`.
    pub origin: Option<String>,
}

/// One call of a connector's tool.
pub struct ToolCall<'a> {
    pub context: &'a CallContext<'a>,
    /// The credentials of the agent's tool definition, if any.
    pub credential: Option<&'a str>,
    /// The tool's name on its server.
    pub name: &'a str,
    pub arguments: Map<String, Value>,
}

/// Where a call happens: what a native tool needs beyond its arguments.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    pub ws: &'a WorkspaceId,
    pub conversation_id: &'a ConversationId,
    /// The number the first source this call finds takes (numbers are unique in a turn).
    pub first_source: usize,
    /// The model cites by writing `[n]` markers, so a tool that finds sources asks for them
    /// (the other models answer with reference chunks of their own).
    pub cite_with_markers: bool,
    /// Calls of the same tool earlier in the turn (names files `image_generated_0`, `_1`, …).
    pub calls_before: u64,
}

/// Where tools store the files they produce (the Files API's store): returns the file id.
#[async_trait::async_trait]
pub trait FileSink: Send + Sync {
    async fn store(
        &self,
        ws: &WorkspaceId,
        file_name: &str,
        mimetype: &str,
        bytes: bytes::Bytes,
    ) -> Result<String, Error>;
}

impl ToolOutput {
    /// A plain answer.
    pub fn text(text: impl Into<String>) -> Self {
        ToolOutput { text: text.into(), ..Default::default() }
    }

    /// A failure the model is told about (the turn goes on).
    pub fn error(text: impl Into<String>) -> Self {
        ToolOutput { text: text.into(), is_error: true, ..Default::default() }
    }

    /// The `tool.execution` entry's `info` for this output of the call `tool_call_id`.
    pub fn execution_info(&self, tool_call_id: &str) -> Map<String, Value> {
        let mut info = execution_info(tool_call_id, &self.text, self.is_error);
        for (key, value) in &self.info {
            info.entry(key.clone()).or_insert_with(|| value.clone());
        }
        info
    }
}

#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// The tools offered, with the credentials of the agent's tool definition if any.
    async fn tools(&self, authorization: Option<&str>) -> Result<Arc<Vec<ServerTool>>, Error>;

    async fn call(&self, call: ToolCall<'_>) -> Result<ToolOutput, Error>;
}

/// The configured connectors by id.
#[derive(Default, Clone)]
pub struct Connectors {
    by_id: HashMap<String, Arc<dyn Connector>>,
    /// The built-in tool types palaver runs itself (for the start-up log).
    native: Vec<ToolType>,
    /// What confines code_interpreter, or why it is not offered (for the start-up log).
    sandbox: Option<String>,
}

impl Connectors {
    /// The MCP servers of `[[connector]]`, then the native tools whose section is present
    /// and that no connector replaces.
    pub fn from_config(file: &FileConfig, files: Option<Arc<dyn FileSink>>) -> anyhow::Result<Self> {
        let mut by_id: HashMap<String, Arc<dyn Connector>> = HashMap::new();
        for config in &file.connectors {
            let connector = mcp::McpConnector::new(config)?;
            anyhow::ensure!(
                by_id.insert(config.id.clone(), Arc::new(connector)).is_none(),
                "connector `{}` is configured twice",
                config.id
            );
        }
        let mut native = Vec::new();
        for kind in [ToolType::WebSearch, ToolType::WebSearchPremium] {
            if by_id.contains_key(kind.as_str()) {
                continue;
            }
            if let Some(search) = search::WebSearch::from_config(kind, file)? {
                by_id.insert(kind.as_str().to_owned(), Arc::new(search));
                native.push(kind);
            }
        }
        let images = ToolType::ImageGeneration;
        if let (Some(config), Some(files), false) =
            (&file.image_generation, &files, by_id.contains_key(images.as_str()))
        {
            by_id.insert(images.as_str().to_owned(), Arc::new(images::ImageGeneration::new(config, files.clone())?));
            native.push(images);
        }
        let code = ToolType::CodeInterpreter;
        let mut confinement = None;
        let auto = file.code_interpreter.sandbox == crate::config::SandboxMode::Auto;
        if let (Some(files), false, true) = (&files, by_id.contains_key(code.as_str()), auto) {
            let tool = code::CodeInterpreter::probing(file.code_interpreter.clone(), files.clone());
            by_id.insert(code.as_str().to_owned(), tool);
            native.push(code);
            confinement =
                Some("code_interpreter: its sandbox is probed in the background (a `tools:` line follows)".into());
        } else if let (Some(files), false) = (&files, by_id.contains_key(code.as_str())) {
            // An explicit mechanism that cannot work here stops the start.
            match sandbox::Sandbox::from_config(&file.code_interpreter)? {
                sandbox::SandboxChoice::Available(sandbox) => {
                    confinement = Some(format!("code_interpreter runs in {}", sandbox.description()));
                    sandbox.spawn_cleanup(std::time::Duration::from_secs(60));
                    by_id
                        .insert(code.as_str().to_owned(), Arc::new(code::CodeInterpreter::new(sandbox, files.clone())));
                    native.push(code);
                }
                sandbox::SandboxChoice::Unavailable { reason } => {
                    confinement = Some(format!("code_interpreter is not offered: no sandbox ({reason})"));
                }
            }
        }
        Ok(Connectors { by_id, native, sandbox: confinement })
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
        let mut parts = Vec::new();
        let native: Vec<&str> = self.native.iter().map(|t| t.as_str()).collect();
        if !native.is_empty() {
            parts.push(format!("built-in tools run by palaver: {}", native.join(", ")));
        }
        let through_mcp: Vec<&str> = builtins
            .iter()
            .map(|t| t.as_str())
            .filter(|id| self.by_id.contains_key(*id) && !native.contains(id))
            .collect();
        if !through_mcp.is_empty() {
            parts.push(format!("built-in tools through MCP connectors: {}", through_mcp.join(", ")));
        }
        let missing: Vec<&str> =
            builtins.iter().map(|t| t.as_str()).filter(|id| !self.by_id.contains_key(*id)).collect();
        if let Some(sandbox) = &self.sandbox {
            parts.push(sandbox.clone());
        }
        if !missing.is_empty() {
            parts.push(format!(
                "not offered to the model (no section for them, nor a [[connector]] with that id, in PALAVER_CONFIG): {}",
                missing.join(", ")
            ));
        }
        let mut connectors: Vec<&str> =
            self.by_id.keys().map(String::as_str).filter(|id| !builtins.iter().any(|t| t.as_str() == *id)).collect();
        connectors.sort_unstable();
        if !connectors.is_empty() {
            parts.push(format!("connectors: {}", connectors.join(", ")));
        }
        parts.join("; ")
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
                code: Code::BadRequest,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_outputs_own_info_joins_the_entry_info_without_replacing_its_members() {
        let mut output = ToolOutput::text("42");
        output.info.insert("code".into(), json!("print(6*7)"));
        output.info.insert("output".into(), json!("not this"));

        let info = output.execution_info("call_1");

        assert_eq!(Value::Object(info), json!({"tool_call_id": "call_1", "output": "42", "code": "print(6*7)"}));
        assert_eq!(ToolOutput::error("no").execution_info("c")["is_error"], json!(true));
    }
}
