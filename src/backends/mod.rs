//! Model backends (DESIGN decision 6) and the routing of model names to them. Which
//! backend serves a model is configuration: `PALAVER_UPSTREAM_URL` for one upstream, the
//! TOML file for several, the built-in `echo` model when nothing is configured.

pub mod chat;
pub mod echo;
pub mod mock;
pub mod openai_compat;

use crate::config::{Config, FileConfig};
use crate::domain::models::ModelCard;
use crate::error::Result;
use chat::ModelBackend;
use openai_compat::{OpenAiCompat, Timeouts, UpstreamOptions};
use std::sync::Arc;
use std::time::Duration;

/// Where one model name is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Echo,
    /// The scripted model for tests (`mock`).
    Mock,
    Upstream(usize),
}

#[derive(Debug, Clone)]
struct Route {
    pattern: String,
    target: Target,
}

impl Route {
    fn matches(&self, model: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => self.pattern == model,
        }
    }
}

pub struct ModelRouter {
    echo: Arc<echo::Echo>,
    mock: Arc<mock::Mock>,
    upstreams: Vec<Arc<OpenAiCompat>>,
    routes: Vec<Route>,
    fallback: Target,
}

impl ModelRouter {
    /// Builds the router once at start-up (HTTP clients included, so no request pays for
    /// connection-pool construction).
    pub fn from_config(config: &Config, file: &FileConfig) -> anyhow::Result<Self> {
        let timeouts = Timeouts {
            connect: Duration::from_millis(config.upstream_connect_timeout_ms),
            read: Duration::from_millis(config.upstream_read_timeout_ms),
        };
        let mut upstreams = Vec::new();
        for upstream in &file.upstreams {
            let key = match &upstream.api_key_env {
                Some(var) => {
                    Some(std::env::var(var).map_err(|_| anyhow::anyhow!("environment variable `{var}` is not set"))?)
                }
                None => None,
            };
            let options =
                UpstreamOptions { dialect: upstream.dialect, timeouts, http2_prior_knowledge: upstream.http2 };
            let client = OpenAiCompat::new(&upstream.name, &upstream.url, key, upstream.models.clone(), options)?;
            upstreams.push(Arc::new(client));
        }
        let mut fallback = Target::Echo;
        // An empty value (as `docker compose` passes for an unset variable) means unset.
        if let Some(url) = config.upstream_url.as_deref().filter(|u| !u.trim().is_empty()) {
            let key = config.upstream_api_key.clone().filter(|k| !k.trim().is_empty());
            let options = UpstreamOptions { dialect: None, timeouts, http2_prior_knowledge: false };
            upstreams.push(Arc::new(OpenAiCompat::new("default", url, key, Vec::new(), options)?));
            fallback = Target::Upstream(upstreams.len() - 1);
        }
        let routes = file
            .routes
            .iter()
            .map(|route| {
                let target = match upstreams.iter().position(|u| u.name() == route.upstream) {
                    Some(index) => Target::Upstream(index),
                    None if route.upstream == mock::MODEL_NAME => Target::Mock,
                    None => Target::Echo,
                };
                Route { pattern: route.model.clone(), target }
            })
            .collect();
        let mock = match &config.mock_script {
            Some(path) => mock::Mock::with_script(crate::config::mock_script(path)?),
            None => mock::Mock::default(),
        };
        Ok(ModelRouter { echo: Arc::new(echo::Echo), mock: Arc::new(mock), upstreams, routes, fallback })
    }

    /// The backend that serves `model`.
    /// The configured routes first; then `mock` is the scripted model whatever else is
    /// configured; every other name goes to the fallback.
    pub fn route(&self, model: &str) -> Target {
        match self.routes.iter().find(|r| r.matches(model)) {
            Some(route) => route.target,
            None if model == mock::MODEL_NAME => Target::Mock,
            None => self.fallback,
        }
    }

    /// The scripted model (for its control API).
    pub fn mock(&self) -> &mock::Mock {
        &self.mock
    }

    /// The backend that answers `model`.
    pub fn backend(&self, model: &str) -> Arc<dyn ModelBackend> {
        match self.route(model) {
            Target::Echo => self.echo.clone(),
            Target::Mock => self.mock.clone(),
            Target::Upstream(index) => self.upstreams[index].clone(),
        }
    }

    /// The upstream client for `model`, if an upstream (not `echo`) serves it.
    pub fn upstream(&self, model: &str) -> Option<Arc<OpenAiCompat>> {
        match self.route(model) {
            Target::Echo | Target::Mock => None,
            Target::Upstream(index) => Some(self.upstreams[index].clone()),
        }
    }

    /// Which backend answers which model names, for the start-up log: a user who asks
    /// `mistral-medium-latest` a question and gets their own words back sees why.
    pub fn describe(&self) -> String {
        let name = |target: Target| match target {
            Target::Echo => "the built-in `echo` model".to_owned(),
            Target::Mock => "the built-in scripted `mock` model".to_owned(),
            Target::Upstream(index) => {
                let upstream = &self.upstreams[index];
                format!("upstream `{}` at {}", upstream.name(), crate::config::redact_url(upstream.base_url()))
            }
        };
        if self.upstreams.is_empty() && self.routes.iter().all(|r| r.target == Target::Echo) {
            return "no upstream configured: the built-in `echo` model answers every model name with the last \
                    user message (set PALAVER_UPSTREAM_URL, or upstreams in PALAVER_CONFIG, for a real model); \
                    `mock` is the scripted model for tests"
                .to_owned();
        }
        let mut parts: Vec<String> =
            self.routes.iter().map(|route| format!("`{}` -> {}", route.pattern, name(route.target))).collect();
        parts.push(format!("`mock` -> {}", name(Target::Mock)));
        parts.push(format!("every other model name -> {}", name(self.fallback)));
        parts.join("; ")
    }

    /// Model cards for `GET /v1/models`: `echo` when it serves anything, the models each
    /// upstream declares in the config file, or else what the upstream itself lists.
    pub async fn cards(&self) -> Result<Vec<ModelCard>> {
        let mut cards = Vec::new();
        let echo_used = self.fallback == Target::Echo || self.routes.iter().any(|r| r.target == Target::Echo);
        if echo_used {
            cards.push(echo::card());
        }
        for upstream in &self.upstreams {
            for card in upstream.cards().await? {
                if !cards.iter().any(|c| c.id == card.id) {
                    cards.push(card);
                }
            }
        }
        // Always served by name, listed last.
        cards.push(mock::card());
        Ok(cards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn routes_match_exact_names_and_prefixes_in_order() {
        let config = Cli::parse_from(["palaver"]).config;
        let file = FileConfig {
            upstreams: vec![crate::config::UpstreamConfig {
                name: "local".into(),
                url: "http://127.0.0.1:1/v1".into(),
                api_key_env: None,
                models: vec![],
                dialect: None,
                http2: false,
            }],
            routes: vec![
                RouteConfig { model: "echo-exact".into(), upstream: "echo".into() },
                RouteConfig { model: "llama*".into(), upstream: "local".into() },
            ],
            ..FileConfig::default()
        };

        let router = ModelRouter::from_config(&config, &file).unwrap();

        assert_eq!(router.route("llama3"), Target::Upstream(0));
        assert_eq!(router.route("echo-exact"), Target::Echo);
        assert_eq!(router.route("other"), Target::Echo, "without an upstream URL, echo answers the rest");
    }
}
