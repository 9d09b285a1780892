//! Client for OpenAI-compatible chat APIs: Mistral's own API, vLLM, Ollama, llama.cpp,
//! TGI, LiteLLM.

use crate::domain::models::{Capabilities, ModelCard};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::time::Duration;

pub struct OpenAiCompat {
    name: String,
    base_url: String,
    api_key: Option<String>,
    declared_models: Vec<String>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct UpstreamModelList {
    data: Vec<UpstreamModel>,
}

#[derive(Deserialize)]
struct UpstreamModel {
    id: String,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    owned_by: Option<String>,
    #[serde(default)]
    max_context_length: Option<u64>,
    #[serde(default)]
    description: Option<String>,
}

impl OpenAiCompat {
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Option<String>,
        declared_models: Vec<String>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .build()?;
        Ok(OpenAiCompat {
            name: name.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            declared_models,
            http,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{}", self.base_url, path));
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// The models this upstream serves: those declared in the config file, or else the
    /// upstream's own `GET /models`.
    pub async fn cards(&self) -> Result<Vec<ModelCard>> {
        if !self.declared_models.is_empty() {
            return Ok(self.declared_models.iter().map(|id| self.card(id.clone(), None, None, None, None)).collect());
        }
        let response = self
            .request(reqwest::Method::GET, "/models")
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| upstream_unreachable(&self.name, &e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(upstream_status(status.as_u16(), &body));
        }
        let list: UpstreamModelList = response.json().await.map_err(|e| Error::Upstream {
            status: 502,
            message: format!("upstream `{}` sent an unreadable model list: {e}", self.name),
        })?;
        Ok(list
            .data
            .into_iter()
            .map(|m| self.card(m.id, m.created, m.owned_by, m.max_context_length, m.description))
            .collect())
    }

    fn card(
        &self,
        id: String,
        created: Option<i64>,
        owned_by: Option<String>,
        max_context_length: Option<u64>,
        description: Option<String>,
    ) -> ModelCard {
        ModelCard {
            name: id.clone(),
            id,
            object: "model",
            created: created.unwrap_or(0),
            owned_by: owned_by.unwrap_or_else(|| self.name.clone()),
            kind: "base",
            capabilities: Capabilities::chat(),
            description: description.unwrap_or_else(|| format!("Served by upstream `{}`.", self.name)),
            max_context_length: max_context_length.unwrap_or(32_768),
            aliases: Vec::new(),
            deprecation: None,
            default_model_temperature: None,
        }
    }
}

/// Maps an upstream's HTTP failure to what palaver answers: 429 stays 429 (the client
/// should back off), 503/504 pass through, anything else is a 502.
pub fn upstream_status(status: u16, body: &str) -> Error {
    let mapped = match status {
        429 | 503 | 504 => status,
        _ => 502,
    };
    let detail: String = body.chars().take(2000).collect();
    Error::Upstream { status: mapped, message: format!("upstream answered {status}: {detail}") }
}

fn upstream_unreachable(name: &str, error: &reqwest::Error) -> Error {
    let status = if error.is_timeout() { 504 } else { 502 };
    Error::Upstream { status, message: format!("upstream `{name}` could not be reached: {error}") }
}
