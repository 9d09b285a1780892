//! The tools of a turn: what the model is offered (client functions and the tools of the
//! connectors the agent's tools name) and which of its calls the server runs itself.

use super::context;
use super::run::{CallKind, Settings};
use crate::backends::chat::{ChatTool, ToolFunction};
use crate::connectors::{self, CallContext, Connector, Connectors, ToolCall, ToolOutput};
use crate::domain::tools::{function_name, ToolType};
use crate::error::Error;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// A tool name the server answers, with the connector that runs it.
pub struct ServerTool {
    /// The tool's name on its server (the model may see it spelled as a function name).
    name: String,
    /// The `tool.execution` entry's `name`: a built-in tool's type (what the SDKs know),
    /// else the tool's own name.
    pub entry_name: String,
    /// What `usage.connectors` counts the call under: the built-in type or the connector id.
    pub usage_key: String,
    connector: Arc<dyn Connector>,
    credential: Option<String>,
    /// Calls wait for the client's `tool_confirmations` before they run.
    requires_confirmation: bool,
}

/// Borrows the turn's tool definitions (`'a`): function schemas are not copied per turn.
pub struct Toolbox<'a> {
    pub chat: Vec<ChatTool<'a>>,
    server: HashMap<String, ServerTool>,
    /// Handoff functions offered, by name: the index of their agent in `targets`.
    handoffs: HashMap<String, usize>,
    targets: &'a [Settings],
}

impl<'a> Toolbox<'a> {
    /// What the agent in force (`settings`) offers: its client functions, the tools of the
    /// connectors its tools name (each connector caches its list), and a function per
    /// handoff target among `targets`. A turn whose tools name no connector and that has
    /// no handoffs costs nothing more than its function list.
    pub async fn of(connectors: &Connectors, settings: &'a Settings, targets: &'a [Settings]) -> Result<Self, Error> {
        let tools = &settings.tools;
        let mut toolbox =
            Toolbox { chat: context::chat_tools(tools), server: HashMap::new(), handoffs: HashMap::new(), targets };
        for tool in tools {
            let Some(connector) = connectors.for_tool(tool)? else { continue };
            let credential = connectors::authorization(tool);
            let builtin = !matches!(tool.kind, ToolType::Connector | ToolType::Function);
            let usage_key = match tool.kind {
                ToolType::Connector => tool.connector_id.clone().unwrap_or_default(),
                kind => kind.as_str().to_owned(),
            };
            for offered in connector.tools(credential).await?.iter() {
                let name = function_name(&offered.name);
                // A client function of the same name wins: the client defined it for this agent.
                let taken = toolbox.chat.iter().any(|c| c.function.name == name);
                if taken || !connectors::exposes(tool, &offered.name) {
                    continue;
                }
                toolbox.chat.push(ChatTool {
                    kind: "function",
                    function: ToolFunction {
                        name: Cow::Owned(name.clone()),
                        description: offered.description.clone().map(Cow::Owned),
                        parameters: Cow::Owned(offered.parameters.clone()),
                        strict: None,
                    },
                });
                let entry_name = if builtin { tool.kind.as_str().to_owned() } else { name.clone() };
                toolbox.server.insert(
                    name,
                    ServerTool {
                        name: offered.name.clone(),
                        entry_name,
                        usage_key: usage_key.clone(),
                        connector: connector.clone(),
                        credential: credential.map(str::to_owned),
                        requires_confirmation: connectors::requires_confirmation(tool, &offered.name),
                    },
                );
            }
        }
        toolbox.offer_handoffs(settings);
        Ok(toolbox)
    }

    /// `handoff_to_<agent_id>` for each target the agent lists that still exists (never
    /// itself), with no parameters, described by the target's name and description.
    fn offer_handoffs(&mut self, settings: &Settings) {
        for id in &settings.handoffs {
            if settings.agent_id.as_ref() == Some(id) {
                continue;
            }
            let Some(index) = self.targets.iter().position(|t| t.agent_id.as_ref() == Some(id)) else { continue };
            let name = context::handoff_function(id);
            if self.chat.iter().any(|c| c.function.name == name) {
                continue;
            }
            let target = &self.targets[index];
            let mut description = format!(
                "Hand the conversation over to agent `{}` ({id}), which then answers the user.",
                target.agent_name.as_deref().unwrap_or(id)
            );
            if let Some(about) = target.description.as_deref().filter(|d| !d.trim().is_empty()) {
                description.push_str(" It is described as: ");
                description.push_str(about);
            }
            let parameters = Map::from_iter([
                ("type".to_owned(), Value::from("object")),
                ("properties".to_owned(), Value::Object(Map::new())),
            ]);
            self.chat.push(ChatTool {
                kind: "function",
                function: ToolFunction {
                    name: Cow::Owned(name.clone()),
                    description: Some(Cow::Owned(description)),
                    parameters: Cow::Owned(parameters),
                    strict: None,
                },
            });
            self.handoffs.insert(name, index);
        }
    }

    pub fn offers_handoffs(&self) -> bool {
        !self.handoffs.is_empty()
    }

    /// The agent a `CallKind::Handoff` goes to.
    pub fn target(&self, index: usize) -> &'a Settings {
        &self.targets[index]
    }

    /// Who answers a call of `name`.
    pub fn call_kind(&self, name: &str) -> CallKind {
        if let Some(index) = self.handoffs.get(name) {
            return CallKind::Handoff(*index);
        }
        match self.server.get(name) {
            None => CallKind::ClientFunction,
            Some(tool) if tool.requires_confirmation => CallKind::NeedsConfirmation,
            Some(_) => CallKind::ServerTool,
        }
    }

    /// The server-side tool called `name`, if the server runs it.
    pub fn server_tool(&self, name: &str) -> Option<&ServerTool> {
        self.server.get(name)
    }
}

impl ServerTool {
    /// Runs a call. Arguments that are not a JSON object and failures the tool reports
    /// are answers for the model, not failures of the turn; a connector that cannot be
    /// reached fails the turn.
    pub async fn run(&self, context: &CallContext<'_>, arguments: &str) -> Result<ToolOutput, Error> {
        let arguments = if arguments.trim().is_empty() { "{}" } else { arguments };
        match serde_json::from_str::<Map<String, Value>>(arguments) {
            Ok(arguments) => {
                let call = ToolCall { context, credential: self.credential.as_deref(), name: &self.name, arguments };
                self.connector.call(call).await
            }
            Err(e) => Ok(ToolOutput::error(format!("The arguments are not a JSON object: {e}"))),
        }
    }
}

/// What the model reads for a denied call.
pub const DENIED: &str = "The user denied this tool call.";
