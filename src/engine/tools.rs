//! The tools of a turn: what the model is offered (client functions and the tools of the
//! connectors the agent's tools name) and which of its calls the server runs itself.

use super::context;
use super::run::CallKind;
use crate::backends::chat::{ChatTool, ToolFunction};
use crate::connectors::{self, Connector, Connectors, ToolOutput};
use crate::domain::tools::{function_name, Tool};
use crate::error::Error;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// A tool name the server answers, with the connector that runs it.
pub struct ServerTool {
    /// The tool's name on its server (the model may see it spelled as a function name).
    name: String,
    connector: Arc<dyn Connector>,
    credential: Option<String>,
    /// Calls wait for the client's `tool_confirmations` before they run.
    requires_confirmation: bool,
}

/// Borrows the turn's tool definitions (`'a`): function schemas are not copied per turn.
#[derive(Default)]
pub struct Toolbox<'a> {
    pub chat: Vec<ChatTool<'a>>,
    server: HashMap<String, ServerTool>,
}

impl<'a> Toolbox<'a> {
    /// Lists the connectors' tools (each connector caches its list). A turn whose tools
    /// name no connector costs nothing more than its function list.
    pub async fn of(connectors: &Connectors, tools: &'a [Tool]) -> Result<Self, Error> {
        let mut toolbox = Toolbox { chat: context::chat_tools(tools), server: HashMap::new() };
        for tool in tools {
            let Some(connector) = connectors.for_tool(tool)? else { continue };
            let credential = connectors::authorization(tool);
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
                toolbox.server.insert(
                    name,
                    ServerTool {
                        name: offered.name.clone(),
                        connector: connector.clone(),
                        credential: credential.map(str::to_owned),
                        requires_confirmation: connectors::requires_confirmation(tool, &offered.name),
                    },
                );
            }
        }
        Ok(toolbox)
    }

    /// Who answers a call of `name`.
    pub fn call_kind(&self, name: &str) -> CallKind {
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
    pub async fn run(&self, arguments: &str) -> Result<ToolOutput, Error> {
        let arguments = if arguments.trim().is_empty() { "{}" } else { arguments };
        match serde_json::from_str::<Map<String, Value>>(arguments) {
            Ok(arguments) => self.connector.call(self.credential.as_deref(), &self.name, arguments).await,
            Err(e) => Ok(ToolOutput::error(format!("The arguments are not a JSON object: {e}"))),
        }
    }
}

/// What the model reads for a denied call.
pub const DENIED: &str = "The user denied this tool call.";
