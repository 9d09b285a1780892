//! `web_search` and `web_search_premium` through fake SearXNG, Brave and Tavily servers,
//! with the scripted upstream making the calls and citing the hits.

use crate::helpers::{names, Options, TestApp};
use crate::upstream::{FakeUpstream, Reply};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the fake provider answers its next search.
#[derive(Clone)]
enum Answer {
    Hits(usize),
    /// Hits pointing at these addresses.
    Urls(Vec<String>),
    Status(u16),
    Slow(Duration),
    Malformed,
}

#[derive(Clone, Default)]
struct Shared {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    /// Every search: provider, query parameters or body, the key header.
    searches: Arc<Mutex<Vec<Value>>>,
    /// Pages fetched by path.
    fetched: Arc<Mutex<Vec<String>>>,
    base: Arc<Mutex<String>>,
}

/// One server playing SearXNG (`GET /search`), Tavily (`POST /search`), Brave
/// (`/res/v1/{web,news}/search`) and the web pages the hits point to.
struct FakeSearch {
    url: String,
    shared: Shared,
}

impl FakeSearch {
    async fn start() -> FakeSearch {
        let shared = Shared::default();
        let router = Router::new()
            .route("/search", get(searxng).post(tavily))
            .route("/res/v1/web/search", get(brave_web))
            .route("/res/v1/news/search", get(brave_news))
            .route("/page/{name}", get(page))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let url = format!("http://{addr}");
        *shared.base.lock().unwrap() = url.clone();
        FakeSearch { url, shared }
    }

    fn answer(&self, answers: impl IntoIterator<Item = Answer>) {
        self.shared.answers.lock().unwrap().extend(answers);
    }

    fn searches(&self) -> Vec<Value> {
        self.shared.searches.lock().unwrap().clone()
    }

    fn fetched(&self) -> Vec<String> {
        self.shared.fetched.lock().unwrap().clone()
    }
}

fn hit_url(shared: &Shared, n: usize) -> String {
    format!("{}/page/{n}", shared.base.lock().unwrap())
}

/// Waits or fails as scripted; `Ok` holds the addresses of the hits to answer with.
async fn next_answer(shared: &Shared) -> Result<Vec<String>, Response> {
    let answer = shared.answers.lock().unwrap().pop_front().unwrap_or(Answer::Hits(2));
    match answer {
        Answer::Hits(n) => Ok((0..n).map(|i| hit_url(shared, i)).collect()),
        Answer::Urls(urls) => Ok(urls),
        Answer::Status(status) => Err((StatusCode::from_u16(status).unwrap(), "no").into_response()),
        Answer::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Ok(vec![hit_url(shared, 0)])
        }
        Answer::Malformed => Err(([(header::CONTENT_TYPE, "application/json")], "{\"results\": [").into_response()),
    }
}

/// Records a search, then answers it as scripted (a refused key: 403), each hit shaped by `hit`.
async fn search_answer(
    shared: &Shared,
    search: Value,
    refused: bool,
    hit: impl Fn(usize, &str) -> Value,
) -> Result<Vec<Value>, Response> {
    shared.searches.lock().unwrap().push(search);
    if refused {
        return Err((StatusCode::FORBIDDEN, "bad key").into_response());
    }
    let urls = next_answer(shared).await?;
    Ok(urls.iter().enumerate().map(|(i, url)| hit(i, url)).collect())
}

async fn searxng(State(shared): State<Shared>, Query(query): Query<HashMap<String, String>>) -> Response {
    let search = json!({"provider": "searxng", "query": query});
    let hit = |i, url: &str| {
        json!({"url": url, "title": format!("Result {i}"), "content": format!("Snippet {i}"),
               "engine": "duckduckgo", "publishedDate": "2025-05-27"})
    };
    match search_answer(&shared, search, false, hit).await {
        Ok(results) => Json(json!({"query": query.get("q"), "results": results})).into_response(),
        Err(response) => response,
    }
}

async fn tavily(State(shared): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let key = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let search = json!({"provider": "tavily", "body": body, "key": key});
    let hit = |i, url: &str| json!({"url": url, "title": format!("Tavily {i}"), "content": format!("Found {i}"), "score": 0.9});
    match search_answer(&shared, search, false, hit).await {
        Ok(results) => Json(json!({"results": results})).into_response(),
        Err(response) => response,
    }
}

async fn brave(shared: Shared, headers: HeaderMap, query: HashMap<String, String>, news: bool) -> Response {
    let key = headers.get("x-subscription-token").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let search = json!({"provider": "brave", "news": news, "query": query, "key": key});
    let hit = |i, url: &str| {
        json!({"url": url, "title": format!("Brave {i}"), "description": format!("Brave snippet {i}"),
               "page_age": "2025-01-01", "meta_url": {"favicon": format!("https://imgs.example/fav{i}.png")}})
    };
    match search_answer(&shared, search, key != "brave-secret", hit).await {
        // The news endpoint lists its hits at the top, the web endpoint under `web`.
        Ok(results) if news => Json(json!({"results": results})).into_response(),
        Ok(results) => Json(json!({"web": {"results": results}})).into_response(),
        Err(response) => response,
    }
}

async fn brave_web(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    brave(shared, headers, q, false).await
}

async fn brave_news(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    brave(shared, headers, q, true).await
}

async fn page(State(shared): State<Shared>, axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    shared.fetched.lock().unwrap().push(name.clone());
    if name == "redirect" {
        // Somewhere on the server's own network.
        let port = shared.base.lock().unwrap().rsplit(':').next().unwrap().to_owned();
        return (StatusCode::FOUND, [(header::LOCATION, format!("http://127.0.0.1:{port}/page/secret"))])
            .into_response();
    }
    let html = format!("<html><script>x()</script><body><h1>Page {name}</h1><p>All about {name}.</p></body></html>");
    ([(header::CONTENT_TYPE, "text/html")], html).into_response()
}

async fn setup(section: &str) -> (TestApp, FakeUpstream, FakeSearch) {
    let search = FakeSearch::start().await;
    let toml = section.replace("{url}", &search.url);
    let (app, upstream) =
        TestApp::with_upstream_options(Options { config_toml: Some(toml), ..Options::default() }).await;
    (app, upstream, search)
}

fn searxng_section(extra: &str) -> String {
    format!("[web_search]\nprovider = \"searxng\"\nurl = \"{{url}}\"\nmax_results = 2\n{extra}")
}

fn web_search_call(id: &'static str, arguments: &'static str) -> Reply {
    Reply::ToolCalls("", vec![(id, "web_search", arguments)])
}

async fn search_agent(app: &TestApp, tool: &str) -> String {
    let agent =
        app.create_agent(json!({"model": "fake-model", "name": "Websearch Agent", "tools": [{"type": tool}]})).await;
    agent["id"].as_str().unwrap().to_owned()
}

fn reference(n: usize, tool: &str, search: &FakeSearch) -> Value {
    json!({"type": "tool_reference", "tool": tool, "title": format!("Result {n}"),
           "url": format!("{}/page/{n}", search.url), "description": format!("Snippet {n}")})
}

fn kinds(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_search_then_a_cited_answer_with_markers_becomes_text_and_tool_reference_chunks() {
    let (app, upstream, search) = setup(&searxng_section("")).await;
    let agent_id = search_agent(&app, "web_search").await;
    upstream.script([
        web_search_call("call_1", r#"{"query": "last euro winner"}"#),
        Reply::Pieces(vec![json!("Spain won ["), json!("1"), json!("] in 2024"), json!(" [0]"), json!(".")]),
    ]);

    let response =
        app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Who won the last Euro?"})).await;

    let outputs = response["outputs"].as_array().unwrap();
    assert_eq!(kinds(outputs), ["tool.execution", "message.output"]);
    assert_eq!(outputs[0]["name"], "web_search");
    assert_eq!(outputs[0]["arguments"], r#"{"query": "last euro winner"}"#);
    assert_eq!(
        outputs[1]["content"],
        json!([
            {"type": "text", "text": "Spain won "},
            reference(1, "web_search", &search),
            {"type": "text", "text": " in 2024 "},
            reference(0, "web_search", &search),
            {"type": "text", "text": "."},
        ])
    );
    assert_eq!(response["usage"]["connectors"], json!({"web_search": 1}));
    assert_eq!(search.searches()[0]["query"]["q"], "last euro winner");

    // The model read the hits as a citation map and was asked to cite with markers.
    let tool_message = upstream.last_request()["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(tool_message["role"], "tool");
    assert_eq!(tool_message["name"], "web_search");
    let content = tool_message["content"].as_str().unwrap();
    let (map, instruction) = content.split_once("\n\n").unwrap();
    let map: Value = serde_json::from_str(map).unwrap();
    assert_eq!(map["0"]["title"], "Result 0");
    assert_eq!(map["1"]["snippets"], json!(["Snippet 1"]));
    assert_eq!(map["1"]["source"], "duckduckgo");
    assert_eq!(map["1"]["date"], "2025-05-27");
    assert!(instruction.contains("[0]"), "{instruction}");

    // Stored as returned.
    let history = app.history(response["conversation_id"].as_str().unwrap()).await;
    assert_eq!(history[1..], outputs[..]);
}

#[tokio::test]
async fn a_streamed_cited_answer_sends_each_reference_as_one_delta_and_folds_to_the_stored_entry() {
    let (app, upstream, search) = setup(&searxng_section("")).await;
    let agent_id = search_agent(&app, "web_search").await;
    upstream.script([
        web_search_call("call_1", r#"{"query": "q"}"#),
        Reply::Pieces(vec![json!("Spain"), json!(" won ["), json!("0]"), json!(".")]),
    ]);

    let events =
        app.stream("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Who won?", "stream": true})).await;

    let names = names(&events);
    assert_eq!(names[1..3], ["tool.execution.started", "tool.execution.done"]);
    assert_eq!(names[3..7], ["message.output.delta"; 4]);
    assert_eq!(names[7..], ["conversation.response.done"]);
    assert_eq!(events[1].1["name"], "web_search");
    assert_eq!(events[2].1["name"], "web_search");
    let deltas: Vec<(Value, Value)> =
        events[3..7].iter().map(|(_, d)| (d["content_index"].clone(), d["content"].clone())).collect();
    assert_eq!(
        deltas,
        [
            (json!(0), json!("Spain")),
            (json!(0), json!(" won ")),
            (json!(1), reference(0, "web_search", &search)),
            (json!(2), json!("."))
        ]
    );
    assert_eq!(events[7].1["usage"]["connectors"], json!({"web_search": 1}));

    let conversation_id = events[0].1["conversation_id"].as_str().unwrap();
    let history = app.history(conversation_id).await;
    assert_eq!(
        history[2]["content"],
        json!([{"type": "text", "text": "Spain won "}, reference(0, "web_search", &search), {"type": "text", "text": "."}])
    );
}

#[tokio::test]
async fn mistral_reference_chunks_become_tool_references_in_place() {
    let search = FakeSearch::start().await;
    let upstream = FakeUpstream::start().await;
    let toml = format!(
        "{}\n[[upstream]]\nname = \"mistral\"\nurl = \"{}\"\ndialect = \"mistral\"\n\n[[route]]\nmodel = \"*\"\nupstream = \"mistral\"\n",
        searxng_section("").replace("{url}", &search.url),
        upstream.url
    );
    let app = TestApp::spawn_with(Options { config_toml: Some(toml), ..Options::default() }).await;
    let agent_id = search_agent(&app, "web_search").await;
    upstream.script([
        web_search_call("call_1", r#"{"query": "q"}"#),
        Reply::Pieces(vec![
            json!([{"type": "text", "text": "Spain won"}, {"type": "reference", "reference_ids": [1, 0]}]),
            json!([{"type": "reference", "reference_ids": [7]}, {"type": "text", "text": " [0]."}]),
        ]),
    ]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Who won?"})).await;

    // Mapped from the upstream's own references; its text is not scanned for markers, and a
    // reference to no source of the turn is dropped.
    assert_eq!(
        response["outputs"][1]["content"],
        json!([
            {"type": "text", "text": "Spain won"},
            reference(1, "web_search", &search),
            reference(0, "web_search", &search),
            {"type": "text", "text": " [0]."}
        ])
    );
    let tool_message = upstream.last_request()["messages"].as_array().unwrap().last().unwrap().clone();
    let map: Value = serde_json::from_str(tool_message["content"].as_str().unwrap()).unwrap();
    assert_eq!(map["1"]["title"], "Result 1", "a Mistral model reads the bare citation map");
}

#[tokio::test]
async fn a_second_search_continues_the_numbering_and_its_sources_can_be_cited() {
    let (app, upstream, search) = setup(&searxng_section("")).await;
    let agent_id = search_agent(&app, "web_search").await;
    upstream.script([
        web_search_call("call_1", r#"{"query": "first"}"#),
        web_search_call("call_2", r#"{"query": "second"}"#),
        Reply::Pieces(vec![json!("Both [1][3].")]),
    ]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Compare"})).await;

    let requests = upstream.requests();
    let last_tool = |request: &Value| {
        let content = request["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_owned();
        serde_json::from_str::<Value>(content.split_once("\n\n").unwrap().0).unwrap()
    };
    let first: Vec<String> = last_tool(&requests[1]).as_object().unwrap().keys().cloned().collect();
    let second: Vec<String> = last_tool(&requests[2]).as_object().unwrap().keys().cloned().collect();
    assert_eq!((first, second), (vec!["0".to_owned(), "1".to_owned()], vec!["2".to_owned(), "3".to_owned()]));
    assert_eq!(
        response["outputs"][2]["content"],
        json!([{"type": "text", "text": "Both "}, reference(1, "web_search", &search), reference(1, "web_search", &search),
               {"type": "text", "text": "."}])
    );
    assert_eq!(response["usage"]["connectors"], json!({"web_search": 2}));
}

#[tokio::test]
async fn text_that_only_looks_like_a_marker_stays_text() {
    let (app, upstream, _search) = setup(&searxng_section("")).await;
    let agent_id = search_agent(&app, "web_search").await;
    upstream.script([
        web_search_call("call_1", r#"{"query": "q"}"#),
        Reply::Pieces(vec![json!("See [x], [99] and [0"), json!(", 5].")]),
    ]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "?"})).await;

    assert_eq!(response["outputs"][1]["content"], "See [x], [99] and [0, 5].");
}

#[tokio::test]
async fn premium_searches_news_under_its_own_name() {
    let (app, upstream, search) = setup(&searxng_section("")).await;
    let agent_id = search_agent(&app, "web_search_premium").await;
    upstream.script([
        Reply::ToolCalls("", vec![("call_1", "news_search", r#"{"query": "elections"}"#)]),
        Reply::Pieces(vec![json!("News [0].")]),
    ]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "News?"})).await;

    let offered: Vec<String> = upstream.requests()[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(offered, ["web_search", "news_search"]);
    assert_eq!(search.searches()[0]["query"]["categories"], "news");
    let execution = &response["outputs"][0];
    assert_eq!(execution["name"], "web_search_premium");
    assert_eq!(execution["info"]["function"], "news_search");
    assert_eq!(response["outputs"][1]["content"][1]["tool"], "web_search_premium");
    assert_eq!(response["usage"]["connectors"], json!({"web_search_premium": 1}));
    // The model sees its own call again, under the name it used.
    let replay = upstream.last_request()["messages"].clone();
    assert_eq!(replay[1]["tool_calls"][0]["function"]["name"], "news_search");
    assert_eq!(replay[2]["name"], "news_search");
}

#[tokio::test]
async fn without_a_web_search_section_the_tool_is_not_offered() {
    let (app, upstream) = TestApp::with_upstream().await;
    let agent_id = search_agent(&app, "web_search").await;

    app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "hi"})).await;

    assert!(upstream.last_request().get("tools").is_none_or(|t| t.as_array().unwrap().is_empty()));
}

#[tokio::test]
async fn provider_faults_are_the_tools_answer_and_the_turn_goes_on() {
    let (app, upstream, search) = setup(&searxng_section("timeout_secs = 1")).await;
    let agent_id = search_agent(&app, "web_search").await;
    let faults = [
        (Answer::Status(429), "429"),
        (Answer::Status(503), "503"),
        (Answer::Slow(Duration::from_secs(3)), "did not answer in time"),
        (Answer::Malformed, "not the JSON"),
    ];
    for (fault, expected) in faults {
        search.answer([fault]);
        upstream.script([web_search_call("call_1", r#"{"query": "q"}"#), Reply::Text("Sorry.")]);

        let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "?"})).await;

        let outputs = response["outputs"].as_array().unwrap();
        assert_eq!(kinds(outputs), ["tool.execution", "message.output"], "{expected}");
        assert_eq!(outputs[0]["info"]["is_error"], true);
        let output = outputs[0]["info"]["output"].as_str().unwrap();
        assert!(output.contains(expected), "{output}");
        assert_eq!(outputs[1]["content"], "Sorry.");
    }
}

#[tokio::test]
async fn brave_gets_its_key_and_a_refused_key_never_reaches_the_model() {
    std::env::set_var("PALAVER_TEST_BRAVE_KEY", "brave-secret");
    std::env::set_var("PALAVER_TEST_BRAVE_WRONG_KEY", "wrong-secret");
    let section = "[web_search]\nprovider = \"brave\"\nurl = \"{url}\"\napi_key_env = \"PALAVER_TEST_BRAVE_KEY\"\n\
                   [web_search_premium]\napi_key_env = \"PALAVER_TEST_BRAVE_WRONG_KEY\"\n";
    let (app, upstream, search) = setup(section).await;
    let agent = search_agent(&app, "web_search").await;
    let premium = search_agent(&app, "web_search_premium").await;
    upstream.script([web_search_call("call_1", r#"{"query": "q"}"#), Reply::Pieces(vec![json!("A [1].")])]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent, "inputs": "?"})).await;

    assert_eq!(search.searches()[0]["key"], "brave-secret");
    assert_eq!(search.searches()[0]["query"]["q"], "q");
    assert_eq!(
        response["outputs"][1]["content"][1],
        json!({"type": "tool_reference", "tool": "web_search", "title": "Brave 1", "url": format!("{}/page/1", search.url),
               "favicon": "https://imgs.example/fav1.png", "description": "Brave snippet 1"})
    );

    upstream.script([
        Reply::ToolCalls("", vec![("call_2", "news_search", r#"{"query": "n"}"#)]),
        Reply::Text("Could not search."),
    ]);
    let refused = app.ok("/v1/conversations", &json!({"agent_id": premium, "inputs": "?"})).await;

    assert_eq!(search.searches()[1]["news"], true);
    let output = refused["outputs"][0]["info"]["output"].as_str().unwrap();
    assert!(output.contains("403") && !output.contains("wrong-secret"), "{output}");
    let everything_sent = serde_json::to_string(&upstream.requests()).unwrap();
    assert!(!everything_sent.contains("secret"), "no key reaches the model");
}

#[tokio::test]
async fn tavily_gets_a_bearer_key_and_the_news_topic() {
    std::env::set_var("PALAVER_TEST_TAVILY_KEY", "tvly-key");
    let section =
        "[web_search_premium]\nprovider = \"tavily\"\nurl = \"{url}\"\napi_key_env = \"PALAVER_TEST_TAVILY_KEY\"\n";
    let (app, upstream, search) = setup(section).await;
    let premium = search_agent(&app, "web_search_premium").await;
    upstream.script([
        Reply::ToolCalls("", vec![("call_1", "news_search", r#"{"query": "n"}"#)]),
        Reply::Pieces(vec![json!("T [0].")]),
    ]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": premium, "inputs": "?"})).await;

    let searched = &search.searches()[0];
    assert_eq!(searched["key"], "Bearer tvly-key");
    assert_eq!(searched["body"]["topic"], "news");
    assert_eq!(searched["body"]["query"], "n");
    assert_eq!(response["outputs"][1]["content"][1]["title"], "Tavily 0");
}

#[tokio::test]
async fn a_hit_on_a_private_address_is_not_fetched() {
    let (app, upstream, search) = setup(&searxng_section("fetch_top = 2")).await;
    let agent_id = search_agent(&app, "web_search").await;
    upstream.script([web_search_call("call_1", r#"{"query": "q"}"#), Reply::Text("Done.")]);

    app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "?"})).await;

    // The hits point at 127.0.0.1 itself: refused without a request.
    assert!(search.fetched().is_empty(), "{:?}", search.fetched());
    let map = last_citation_map(&upstream);
    assert_eq!(map["0"]["snippets"], json!(["Snippet 0"]), "no page text from a private address");
}

#[tokio::test]
async fn pages_on_allowed_hosts_are_read_and_a_redirect_to_a_private_address_is_refused() {
    // `localhost` is allowed by name; the redirect its page answers with, to 127.0.0.1, is not.
    let (app, upstream, search) = setup(&searxng_section("fetch_top = 2\nallow_hosts = [\"localhost\"]")).await;
    let agent_id = search_agent(&app, "web_search").await;
    let port = search.url.rsplit(':').next().unwrap().to_owned();
    search.answer([Answer::Urls(vec![
        format!("http://localhost:{port}/page/0"),
        format!("http://localhost:{port}/page/redirect"),
    ])]);
    upstream.script([web_search_call("call_1", r#"{"query": "q"}"#), Reply::Text("Done.")]);

    app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "?"})).await;

    let map = last_citation_map(&upstream);
    assert_eq!(map["0"]["snippets"], json!(["Snippet 0", "Page 0 All about 0."]));
    assert_eq!(map["1"]["snippets"], json!(["Snippet 1"]));
    let mut fetched = search.fetched();
    fetched.sort();
    assert_eq!(fetched, ["0", "redirect"], "the private address behind the redirect saw nothing");
}

/// The citation map of the last tool message the model read.
fn last_citation_map(upstream: &FakeUpstream) -> Value {
    let request = upstream.last_request();
    let content = request["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_owned();
    serde_json::from_str(content.split_once("\n\n").map_or(content.as_str(), |(map, _)| map)).unwrap()
}

#[tokio::test]
async fn a_search_that_requires_confirmation_waits_and_its_sources_are_cited_once_allowed() {
    let (app, upstream, search) = setup(&searxng_section("")).await;
    let tool = json!({"type": "web_search", "tool_configuration": {"requires_confirmation": ["web_search"]}});
    let agent = app.create_agent(json!({"model": "fake-model", "name": "Careful", "tools": [tool]})).await;
    upstream.script([web_search_call("call_c", r#"{"query": "q"}"#), Reply::Pieces(vec![json!("Found [0].")])]);

    let first = app.ok("/v1/conversations", &json!({"agent_id": agent["id"], "inputs": "Search?"})).await;
    assert_eq!(first["outputs"][0]["type"], "function.call");
    assert_eq!(first["outputs"][0]["confirmation_status"], "pending");
    assert!(search.searches().is_empty(), "nothing is searched before the confirmation");

    let path = format!("/v1/conversations/{}", first["conversation_id"].as_str().unwrap());
    let body = json!({"inputs": [], "tool_confirmations": [{"tool_call_id": "call_c", "confirmation": "allow"}]});
    let second = app.ok(&path, &body).await;

    assert_eq!(kinds(second["outputs"].as_array().unwrap()), ["tool.execution", "message.output"]);
    assert_eq!(second["outputs"][0]["name"], "web_search");
    assert_eq!(second["outputs"][1]["content"][1], reference(0, "web_search", &search));
    assert_eq!(second["usage"]["connectors"], json!({"web_search": 1}));
}
