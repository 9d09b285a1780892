//! `code_interpreter`, run by palaver in its own sandbox (`connectors::sandbox`): the model's
//! Python runs in the work directory of its conversation, kept between calls; files the
//! code writes are stored through the Files API and shown to the user as `tool_file` chunks.

use super::sandbox::{Sandbox, SandboxChoice};
use super::{Connector, FileSink, ProducedFile, ServerTool, ToolCall, ToolOutput};
use crate::config::CodeInterpreterConfig;
use crate::error::Error;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::OnceCell;

pub struct CodeInterpreter {
    /// The sandbox, once probed (`None`: none works here, and the tool is not offered).
    sandbox: OnceCell<Option<Arc<Sandbox>>>,
    /// What `sandbox = "auto"` probes with, when it has not been probed yet.
    config: CodeInterpreterConfig,
    files: Arc<dyn FileSink>,
    tools: Arc<Vec<ServerTool>>,
}

impl CodeInterpreter {
    /// Over a sandbox already chosen and checked.
    pub fn new(sandbox: Arc<Sandbox>, files: Arc<dyn FileSink>) -> Self {
        let tool = Self::with(CodeInterpreterConfig::default(), files);
        tool.sandbox.set(Some(sandbox)).ok();
        tool
    }

    /// With `sandbox = "auto"`: the probe (which starts the interpreter) runs in the
    /// background, so the server is up at once; the first call that needs the tool waits
    /// for it, and the log says what it found.
    pub fn probing(config: CodeInterpreterConfig, files: Arc<dyn FileSink>) -> Arc<Self> {
        let tool = Arc::new(Self::with(config, files));
        let probe = tool.clone();
        tokio::spawn(async move {
            probe.sandbox().await;
        });
        tool
    }

    async fn sandbox(&self) -> Option<&Arc<Sandbox>> {
        let probed = self.sandbox.get_or_init(|| async {
            let config = self.config.clone();
            match tokio::task::spawn_blocking(move || Sandbox::from_config(&config)).await {
                Ok(Ok(SandboxChoice::Available(sandbox))) => {
                    tracing::info!("tools: code_interpreter runs in {}", sandbox.description());
                    sandbox.spawn_cleanup(std::time::Duration::from_secs(60));
                    Some(sandbox)
                }
                Ok(Ok(SandboxChoice::Unavailable { reason })) => {
                    tracing::warn!("tools: code_interpreter is not offered: no sandbox ({reason})");
                    None
                }
                Ok(Err(error)) => {
                    tracing::error!("tools: code_interpreter is not offered: {error:#}");
                    None
                }
                Err(_) => None,
            }
        });
        probed.await.as_ref()
    }

    fn with(config: CodeInterpreterConfig, files: Arc<dyn FileSink>) -> Self {
        let tool = ServerTool::with_text_parameter(
            "code_interpreter",
            "Run Python 3 code in a sandbox (numpy, pandas and matplotlib when installed; no network). \
             Files written to the working directory stay for later calls of this conversation and are shown \
             to the user; the value of a final expression is printed as in a notebook.",
            "code",
            "The Python code to run.",
        );
        CodeInterpreter { sandbox: OnceCell::new(), config, files, tools: Arc::new(vec![tool]) }
    }
}

/// The media type a file is stored with, by its extension.
fn mimetype(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "csv" => "text/csv",
        "txt" | "md" | "log" => "text/plain",
        "json" => "application/json",
        "html" => "text/html",
        _ => "application/octet-stream",
    }
}

/// The type the `tool_file` chunk reports: the extension, as the hosted API does.
fn file_type(name: &str) -> String {
    name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default()
}

#[async_trait::async_trait]
impl Connector for CodeInterpreter {
    async fn tools(&self, _authorization: Option<&str>) -> Result<Arc<Vec<ServerTool>>, Error> {
        Ok(match self.sandbox().await {
            Some(_) => self.tools.clone(),
            None => Arc::default(),
        })
    }

    async fn call(&self, call: ToolCall<'_>) -> Result<ToolOutput, Error> {
        let Some(sandbox) = self.sandbox().await else {
            return Ok(ToolOutput::error("code_interpreter is not available on this server."));
        };
        let Some(code) = call.arguments.get("code").and_then(Value::as_str).filter(|c| !c.trim().is_empty()) else {
            return Ok(ToolOutput::error("`code` is missing: call the tool with {\"code\": \"print(1 + 1)\"}."));
        };
        // One work directory per conversation: a restart is a conversation of its own.
        let execution = match sandbox.run(call.context.conversation_id.as_str(), code).await {
            Ok(execution) => execution,
            Err(error) => {
                tracing::error!(%error, "the sandbox failed");
                return Ok(ToolOutput::error(error.to_string()));
            }
        };
        let mut text = execution.report();
        let is_error = execution.is_error();
        let mut files = Vec::with_capacity(execution.files.len());
        for produced in execution.files {
            let file_id =
                self.files.store(call.context.ws, &produced.name, mimetype(&produced.name), produced.bytes).await?;
            files.push(ProducedFile { file_id, file_type: file_type(&produced.name), file_name: produced.name });
        }
        let mut info = serde_json::Map::new();
        info.insert("code".into(), Value::from(code));
        info.insert("code_output".into(), Value::from(text.as_str()));
        if !files.is_empty() {
            let names: Vec<&str> = files.iter().map(|f| f.file_name.as_str()).collect();
            text.push_str(&format!(
                "{}Files written (shown to the user): {}.",
                if text.is_empty() || text.ends_with('\n') { "" } else { "\n" },
                names.join(", ")
            ));
        }
        Ok(ToolOutput { text, is_error, info, files, sources: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_typed_by_their_extension() {
        assert_eq!((mimetype("figure_0.png"), file_type("figure_0.png").as_str()), ("image/png", "png"));
        assert_eq!((mimetype("data.CSV"), file_type("data.CSV").as_str()), ("text/csv", "csv"));
        assert_eq!((mimetype("blob"), file_type("blob").as_str()), ("application/octet-stream", ""));
    }
}
