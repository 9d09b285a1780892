//! The search providers: SearXNG (self-hosted, no key), the Brave Search API and Tavily.
//! Each turns its own answer into hits; none of them lets a key reach a log or the model.

use super::{Provider, SearchError, SearchKind};
use crate::config::SearchProvider;
use crate::connectors::Source;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

pub fn build(
    provider: SearchProvider,
    url: Option<&str>,
    key: Option<String>,
    timeout: Duration,
) -> anyhow::Result<Arc<dyn Provider>> {
    let http = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build()?;
    let base = |default: &str| url.unwrap_or(default).trim_end_matches('/').to_owned();
    Ok(match provider {
        SearchProvider::Searxng => {
            let url = url.ok_or_else(|| anyhow::anyhow!("SearXNG needs `url`, e.g. http://localhost:8888"))?;
            Arc::new(Searxng { http, url: url.trim_end_matches('/').to_owned() })
        }
        SearchProvider::Brave => Arc::new(Brave {
            http,
            url: base("https://api.search.brave.com"),
            key: key.ok_or_else(|| anyhow::anyhow!("Brave Search needs `api_key_env`"))?,
        }),
        SearchProvider::Tavily => Arc::new(Tavily {
            http,
            url: base("https://api.tavily.com"),
            key: key.ok_or_else(|| anyhow::anyhow!("Tavily needs `api_key_env`"))?,
        }),
    })
}

/// Sends a request and reads its JSON answer, with every failure as a `SearchError`.
async fn answer<T: for<'de> Deserialize<'de>>(
    provider: &str,
    request: reqwest::RequestBuilder,
) -> Result<T, SearchError> {
    // The provider is a service the operator chose; the pages read after a search are
    // anyone's, and get no `traceparent`.
    let request = crate::telemetry::traces::propagate(request);
    let response = request.send().await.map_err(|e| SearchError::transport(provider, e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(SearchError::status(provider, status));
    }
    response.json::<T>().await.map_err(|e| SearchError::transport(provider, e))
}

/// A hit as the providers describe it, before it becomes a `Source`.
fn source(url: String, title: String, snippet: Option<String>, origin: &str) -> Source {
    let title = if title.trim().is_empty() { url.clone() } else { title };
    Source {
        url: Some(url),
        title,
        snippet: snippet.filter(|s| !s.trim().is_empty()),
        origin: Some(origin.to_owned()),
        ..Default::default()
    }
}

struct Searxng {
    http: reqwest::Client,
    url: String,
}

#[derive(Deserialize)]
struct SearxngAnswer {
    #[serde(default)]
    results: Vec<SearxngHit>,
}

#[derive(Deserialize)]
struct SearxngHit {
    url: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default, rename = "publishedDate")]
    published_date: Option<String>,
    #[serde(default)]
    engine: Option<String>,
}

#[async_trait::async_trait]
impl Provider for Searxng {
    async fn search(&self, query: &str, kind: SearchKind, max: usize) -> Result<Vec<Source>, SearchError> {
        let mut params = vec![("q", query), ("format", "json")];
        if kind == SearchKind::News {
            params.push(("categories", "news"));
        }
        let request = self.http.get(format!("{}/search", self.url)).query(&params);
        let answer: SearxngAnswer = answer("SearXNG", request).await?;
        Ok(answer
            .results
            .into_iter()
            .take(max)
            .map(|hit| {
                let origin = hit.engine.unwrap_or_else(|| "searxng".to_owned());
                Source { date: hit.published_date, ..source(hit.url, hit.title, hit.content, &origin) }
            })
            .collect())
    }
}

struct Brave {
    http: reqwest::Client,
    url: String,
    key: String,
}

#[derive(Deserialize)]
struct BraveWebAnswer {
    #[serde(default)]
    web: Option<BraveResults>,
}

#[derive(Deserialize)]
struct BraveResults {
    #[serde(default)]
    results: Vec<BraveHit>,
}

#[derive(Deserialize)]
struct BraveHit {
    url: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    page_age: Option<String>,
    #[serde(default)]
    age: Option<String>,
    #[serde(default)]
    meta_url: Option<BraveMetaUrl>,
}

#[derive(Deserialize)]
struct BraveMetaUrl {
    #[serde(default)]
    favicon: Option<String>,
}

#[async_trait::async_trait]
impl Provider for Brave {
    async fn search(&self, query: &str, kind: SearchKind, max: usize) -> Result<Vec<Source>, SearchError> {
        let path = match kind {
            SearchKind::Web => "web",
            SearchKind::News => "news",
        };
        let count = max.min(20).to_string();
        let request = self
            .http
            .get(format!("{}/res/v1/{path}/search", self.url))
            .query(&[("q", query), ("count", count.as_str())])
            .header("Accept", "application/json")
            .header("X-Subscription-Token", &self.key);
        // The web endpoint nests its hits under `web`; the news endpoint lists them at the top.
        let hits = match kind {
            SearchKind::Web => answer::<BraveWebAnswer>("Brave Search", request).await?.web.map(|w| w.results),
            SearchKind::News => Some(answer::<BraveResults>("Brave Search", request).await?.results),
        };
        Ok(hits
            .unwrap_or_default()
            .into_iter()
            .take(max)
            .map(|hit| Source {
                favicon: hit.meta_url.and_then(|m| m.favicon),
                date: hit.page_age.or(hit.age),
                ..source(hit.url, hit.title, hit.description, "brave")
            })
            .collect())
    }
}

struct Tavily {
    http: reqwest::Client,
    url: String,
    key: String,
}

#[derive(Deserialize)]
struct TavilyAnswer {
    #[serde(default)]
    results: Vec<TavilyHit>,
}

#[derive(Deserialize)]
struct TavilyHit {
    url: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    published_date: Option<String>,
    #[serde(default)]
    favicon: Option<String>,
}

#[async_trait::async_trait]
impl Provider for Tavily {
    async fn search(&self, query: &str, kind: SearchKind, max: usize) -> Result<Vec<Source>, SearchError> {
        let topic = match kind {
            SearchKind::Web => "general",
            SearchKind::News => "news",
        };
        let request = self
            .http
            .post(format!("{}/search", self.url))
            .bearer_auth(&self.key)
            .json(&serde_json::json!({"query": query, "max_results": max, "topic": topic}));
        let answer: TavilyAnswer = answer("Tavily", request).await?;
        Ok(answer
            .results
            .into_iter()
            .take(max)
            .map(|hit| Source {
                favicon: hit.favicon,
                date: hit.published_date,
                ..source(hit.url, hit.title, hit.content, "tavily")
            })
            .collect())
    }
}
