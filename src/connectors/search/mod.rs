//! `web_search` and `web_search_premium`, run by palaver through a search provider the
//! operator runs or pays for (`[web_search]`, `[web_search_premium]`). The model reads the
//! hits as Mistral's citation map, numbered from the turn's next source number, and may
//! cite them (DESIGN decision 11).

mod fetch;
mod providers;

use super::{Connector, ServerTool, Source, ToolCall, ToolOutput};
use crate::config::{FileConfig, SearchProvider};
use crate::domain::tools::ToolType;
use crate::error::Error;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// What a search asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    Web,
    News,
}

/// Why a search found nothing; the model is told, the turn goes on. Never carries a key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SearchError(String);

impl SearchError {
    fn status(provider: &str, status: reqwest::StatusCode) -> Self {
        let meaning = match status.as_u16() {
            401 | 403 => "the key was refused",
            429 => "too many searches; try again later",
            500..=599 => "the provider failed",
            _ => "the provider refused the search",
        };
        SearchError(format!("{provider} answered {status}: {meaning}"))
    }

    fn transport(provider: &str, error: reqwest::Error) -> Self {
        // Without the URL: it may carry the query string, and some providers a key.
        let error = error.without_url();
        if error.is_timeout() {
            SearchError(format!("{provider} did not answer in time"))
        } else if error.is_decode() {
            SearchError(format!("{provider} sent an answer that is not the JSON it should be: {error}"))
        } else {
            SearchError(format!("{provider} could not be reached: {error}"))
        }
    }
}

/// A search provider: a query in, hits out (at most `max`).
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    async fn search(&self, query: &str, kind: SearchKind, max: usize) -> Result<Vec<Source>, SearchError>;
}

/// The `web_search` or `web_search_premium` tool.
pub struct WebSearch {
    kind: ToolType,
    provider: Arc<dyn Provider>,
    max_results: usize,
    /// Reads the top hits' pages, when `fetch_top` > 0.
    pages: Option<(usize, fetch::PageFetcher)>,
    tools: Arc<Vec<ServerTool>>,
}

const DEFAULT_MAX_RESULTS: usize = 5;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl WebSearch {
    /// The tool `kind` as configured, or `None` when its section (and, for premium,
    /// `[web_search]`) is absent.
    pub fn from_config(kind: ToolType, file: &FileConfig) -> anyhow::Result<Option<WebSearch>> {
        let section = match (kind, &file.web_search, &file.web_search_premium) {
            (ToolType::WebSearch, Some(plain), _) => plain.clone(),
            (ToolType::WebSearchPremium, plain, Some(premium)) => premium.or(&plain.clone().unwrap_or_default()),
            (ToolType::WebSearchPremium, Some(plain), None) => plain.clone(),
            _ => return Ok(None),
        };
        let name = kind.as_str();
        let provider =
            section.provider.ok_or_else(|| anyhow::anyhow!("[{name}] needs `provider` (searxng, brave or tavily)"))?;
        let timeout = section.timeout_secs.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let key = super::key_from_env(name, section.api_key_env.as_deref())?;
        let provider = providers::build(provider, section.url.as_deref(), key, timeout)
            .map_err(|e| anyhow::anyhow!("[{name}]: {e}"))?;
        let fetch_top = section.fetch_top.unwrap_or(0);
        let pages = (fetch_top > 0)
            .then(|| {
                let guard = fetch::Guard {
                    allow_private: section.allow_private.unwrap_or(false),
                    allow_hosts: section.allow_hosts.clone().unwrap_or_default(),
                };
                fetch::PageFetcher::new(guard, timeout).map(|fetcher| (fetch_top, fetcher))
            })
            .transpose()?;
        Ok(Some(WebSearch {
            kind,
            provider,
            max_results: section.max_results.unwrap_or(DEFAULT_MAX_RESULTS).clamp(1, 50),
            pages,
            tools: Arc::new(offered(kind)),
        }))
    }

    #[cfg(test)]
    fn with_provider(kind: ToolType, provider: Arc<dyn Provider>) -> WebSearch {
        WebSearch { kind, provider, max_results: DEFAULT_MAX_RESULTS, pages: None, tools: Arc::new(offered(kind)) }
    }
}

/// The functions the model is offered: `web_search`, and for premium also `news_search`.
fn offered(kind: ToolType) -> Vec<ServerTool> {
    let search = |name: &str, what: &str| {
        let description = format!("Search {what}. Answers with numbered sources the answer can cite.");
        ServerTool::with_text_parameter(name, &description, "query", "What to search for.")
    };
    let mut tools = vec![search("web_search", "the web")];
    if kind == ToolType::WebSearchPremium {
        tools.push(search("news_search", "recent news"));
    }
    tools
}

#[async_trait::async_trait]
impl Connector for WebSearch {
    async fn tools(&self, _authorization: Option<&str>) -> Result<Arc<Vec<ServerTool>>, Error> {
        Ok(self.tools.clone())
    }

    async fn call(&self, call: ToolCall<'_>) -> Result<ToolOutput, Error> {
        let (context, name, arguments) = (call.context, call.name, call.arguments);
        let kind = if name == "news_search" && self.kind == ToolType::WebSearchPremium {
            SearchKind::News
        } else {
            SearchKind::Web
        };
        let Some(query) = arguments.get("query").and_then(Value::as_str).map(str::trim).filter(|q| !q.is_empty())
        else {
            return Ok(ToolOutput::error(
                "`query` is missing: call the tool with {\"query\": \"what to search for\"}.",
            ));
        };
        let mut hits = match self.provider.search(query, kind, self.max_results).await {
            Ok(hits) => hits,
            Err(error) => {
                tracing::warn!(tool = self.kind.as_str(), %error, "search failed");
                return Ok(ToolOutput::error(format!("The search failed: {error}.")));
            }
        };
        hits.truncate(self.max_results);
        let pages = match &self.pages {
            Some((top, fetcher)) => fetcher.read_all(hits.iter().take(*top).map(|h| h.url.as_deref())).await,
            None => Vec::new(),
        };
        let text = if hits.is_empty() {
            format!("No results for \"{query}\".")
        } else {
            answer(&hits, &pages, context.first_source, context.cite_with_markers)
        };
        Ok(ToolOutput { text, sources: hits, ..Default::default() })
    }
}

/// What the model reads: the citation map, numbered from `first`, and (for a model that
/// cites with markers) how to cite.
fn answer(hits: &[Source], pages: &[Option<String>], first: usize, markers: bool) -> String {
    let mut map = Map::new();
    for (i, hit) in hits.iter().enumerate() {
        let mut snippets: Vec<&str> = hit.snippet.as_deref().into_iter().collect();
        if let Some(Some(page)) = pages.get(i) {
            snippets.push(page);
        }
        map.insert(
            (first + i).to_string(),
            json!({
                "url": hit.url,
                "title": hit.title,
                "snippets": snippets,
                "description": hit.snippet,
                "date": hit.date,
                "source": hit.origin,
            }),
        );
    }
    let mut text = Value::Object(map).to_string();
    if markers {
        text.push_str(
            "\n\nCite the sources you use by their number in square brackets right after the statement \
             they support, e.g. [",
        );
        text.push_str(&first.to_string());
        text.push_str("].");
    }
    text
}

/// The provider named in the config, for the start-up log.
pub fn provider_name(provider: SearchProvider) -> &'static str {
    match provider {
        SearchProvider::Searxng => "SearXNG",
        SearchProvider::Brave => "Brave Search",
        SearchProvider::Tavily => "Tavily",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::CallContext;
    use crate::domain::ids::{ConversationId, WorkspaceId};

    struct Fixed(Vec<Source>);

    #[async_trait::async_trait]
    impl Provider for Fixed {
        async fn search(&self, _query: &str, _kind: SearchKind, _max: usize) -> Result<Vec<Source>, SearchError> {
            Ok(self.0.clone())
        }
    }

    fn hit(title: &str) -> Source {
        Source {
            url: Some(format!("https://example.com/{title}")),
            title: title.into(),
            snippet: Some(format!("about {title}")),
            origin: Some("fixed".into()),
            ..Default::default()
        }
    }

    /// Calls `search` as the turn's call whose first source is numbered `first_source`.
    async fn search_with(search: &WebSearch, first_source: usize, markers: bool, arguments: Value) -> ToolOutput {
        let (ws, conversation_id) = (WorkspaceId::default_workspace(), ConversationId("conv_1".into()));
        let context = CallContext {
            ws: &ws,
            conversation_id: &conversation_id,
            first_source,
            cite_with_markers: markers,
            calls_before: 0,
        };
        let arguments = arguments.as_object().cloned().unwrap();
        search.call(ToolCall { context: &context, credential: None, name: "web_search", arguments }).await.unwrap()
    }

    #[tokio::test]
    async fn hits_are_numbered_from_the_turns_next_source_number() {
        let search = WebSearch::with_provider(ToolType::WebSearch, Arc::new(Fixed(vec![hit("a"), hit("b")])));

        let output = search_with(&search, 3, false, json!({"query": "q"})).await;

        let map: Value = serde_json::from_str(&output.text).unwrap();
        assert_eq!(map["3"]["title"], "a");
        assert_eq!(map["4"]["snippets"], json!(["about b"]));
        assert_eq!(map["4"]["source"], "fixed");
        assert_eq!(output.sources.len(), 2);
        assert!(!output.is_error);
    }

    #[tokio::test]
    async fn a_model_that_cites_with_markers_is_told_how() {
        let search = WebSearch::with_provider(ToolType::WebSearch, Arc::new(Fixed(vec![hit("a")])));

        let output = search_with(&search, 0, true, json!({"query": "q"})).await;

        assert!(output.text.ends_with("e.g. [0]."), "{}", output.text);
        assert!(search_with(&search, 0, true, json!({})).await.is_error);
    }

    #[test]
    fn premium_offers_news_search_too() {
        let names = |kind| offered(kind).into_iter().map(|t| t.name).collect::<Vec<_>>();
        assert_eq!(names(ToolType::WebSearch), ["web_search"]);
        assert_eq!(names(ToolType::WebSearchPremium), ["web_search", "news_search"]);
    }
}
