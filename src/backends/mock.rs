//! The built-in scripted model `mock`, for users' own integration tests: deterministic,
//! streamed word by word like a real model, and steered from the user message itself.
//!
//! - Directives in the last user message (written exactly so; other models ignore them):
//!   `[[call:NAME {json}]]` calls the function `NAME` with those arguments (several
//!   directives, several calls in one answer); `[[error:STATUS]]` fails as an upstream
//!   answering that HTTP status (429 reaches the client as 429); `[[slow:MS]]` waits `MS`
//!   milliseconds before each delta. The words around the directives are the answer.
//! - Auto mode, when the message has no directive: if functions are offered, the model calls
//!   each of them once, with arguments made from its JSON schema; once the results are in,
//!   it answers with a summary of them. Offered handoffs are not called.
//! - Otherwise it answers like `echo`: the last user message.
//!
//! Rules (`domain::mock`) come first: those a workspace added through
//! `/palaver/mock/rules`, then those of the `PALAVER_MOCK_SCRIPT` file; the first that
//! matches and has uses left answers. Every request is kept in the workspace's journal
//! (`/palaver/mock/journal`), so a test can assert on the prompt its app produced.

use super::chat::{ChatDelta, ChatMessage, ChatRequest, ChatTool, DeltaStream, ModelBackend, ToolCallDelta};
use super::echo;
use crate::domain::conversations::Usage;
use crate::domain::ids::generate_tool_call_id;
use crate::domain::mock::{Last, MockReply, MockRule, MockScript, MockUsage, Times, MAX_DELAY_MS, MAX_RULES};
use crate::domain::models::ModelCard;
use crate::error::Error;
use futures::StreamExt;
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

pub const MODEL_NAME: &str = "mock";

pub fn card() -> ModelCard {
    ModelCard {
        name: MODEL_NAME.to_owned(),
        id: MODEL_NAME.to_owned(),
        description: "Built-in scripted model for tests: obeys [[call:NAME {json}]], [[error:STATUS]] and \
                      [[slow:MS]] in the user message, and otherwise calls each offered function once."
            .to_owned(),
        ..echo::card()
    }
}

/// What the last user message asks of the model.
#[derive(Debug, Default, PartialEq)]
struct Directives {
    calls: Vec<(String, String)>,
    error: Option<u16>,
    delay: Option<Duration>,
    /// The message without its directives.
    text: String,
}

/// Reads the directives of `message`. Text that only looks like one (`[[call:` without a
/// name, arguments that are not a JSON object, no closing `]]`) stays text.
fn directives(message: &str) -> Directives {
    let mut found = Directives::default();
    let mut rest = message;
    while let Some(start) = rest.find("[[") {
        found.text.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match directive(after, &mut found) {
            Some(used) => rest = &after[used..],
            None => {
                found.text.push_str("[[");
                rest = after;
            }
        }
    }
    found.text.push_str(rest);
    found.text = found.text.split_whitespace().collect::<Vec<_>>().join(" ");
    found
}

/// Reads one directive after its `[[`; returns how many bytes it used, through its `]]`.
fn directive(text: &str, found: &mut Directives) -> Option<usize> {
    let end_of = |body: &str| body.find("]]");
    if let Some(body) = text.strip_prefix("call:") {
        let name_len = body.find(|c: char| c.is_whitespace() || c == ']').unwrap_or(body.len());
        let name = &body[..name_len];
        if name.is_empty() {
            return None;
        }
        let json = body[name_len..].trim_start();
        let skipped = body.len() - name_len - json.len();
        let (arguments, used) = if json.starts_with('{') {
            let mut values = serde_json::Deserializer::from_str(json).into_iter::<Map<String, Value>>();
            let arguments = values.next()?.ok()?;
            (Value::Object(arguments).to_string(), values.byte_offset())
        } else {
            ("{}".to_owned(), 0)
        };
        let tail = &json[used..];
        let close = tail.trim_start();
        close.starts_with("]]").then_some(())?;
        found.calls.push((name.to_owned(), arguments));
        return Some(5 + name_len + skipped + used + (tail.len() - close.len()) + 2);
    }
    for (prefix, apply) in [
        ("error:", (|n: u64, f: &mut Directives| f.error = u16::try_from(n).ok()) as fn(u64, &mut Directives)),
        ("slow:", |n, f| f.delay = Some(Duration::from_millis(n.min(MAX_DELAY_MS)))),
    ] {
        if let Some(body) = text.strip_prefix(prefix) {
            let end = end_of(body)?;
            let value: u64 = body[..end].trim().parse().ok()?;
            apply(value, found);
            return Some(prefix.len() + end + 2);
        }
    }
    None
}

/// Arguments a JSON schema accepts: every property, each with a plain value of its type
/// (the first of an `enum`).
fn example(schema: &Value) -> Value {
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).find(|k| *k != "null").unwrap_or("string"),
        Some(Value::String(kind)) => kind.as_str(),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let values = properties.into_iter().flatten().map(|(name, property)| (name.clone(), example(property)));
            Value::Object(values.collect())
        }
        "array" => Value::Array(schema.get("items").map(example).into_iter().collect()),
        "integer" => Value::from(1),
        "number" => Value::from(1.5),
        "boolean" => Value::Bool(true),
        _ => Value::from("text"),
    }
}

/// Requests kept per workspace (each a whole prompt); older ones are dropped.
const JOURNAL_LIMIT: usize = 100;

#[derive(Default)]
pub struct Mock {
    scripts: Mutex<Scripts>,
}

#[derive(Default)]
struct Scripts {
    /// The file's rules, for every workspace.
    global: Vec<Rule>,
    /// By workspace: the rules added there, and the journal.
    scopes: HashMap<String, Scope>,
}

#[derive(Default)]
struct Scope {
    rules: Vec<Rule>,
    journal: VecDeque<Value>,
    /// How many of this workspace's requests each of the file's rules answered: its
    /// `times` counts per workspace, so suites sharing a server do not use each other's up.
    global_used: Vec<u64>,
}

struct Rule {
    rule: MockRule,
    pattern: Option<regex_lite::Regex>,
    used: u64,
}

impl Rule {
    /// A rule already validated (`MockScript::validate`).
    fn new(rule: MockRule) -> Self {
        let pattern = rule.when.message_matches.as_deref().and_then(|p| regex_lite::Regex::new(p).ok());
        Rule { rule, pattern, used: 0 }
    }

    fn uses(&self) -> Option<u64> {
        match self.rule.times {
            Some(Times::Count(n)) => Some(n),
            Some(Times::Forever(_)) => None,
            None => Some(self.rule.replies.len() as u64),
        }
    }

    fn matches(&self, used: u64, request: &ChatRequest<'_>, last_user: Option<&str>, last: Option<Last>) -> bool {
        let when = &self.rule.when;
        let caller = &request.caller;
        let agent = |wanted: &String| {
            caller.agent_id.as_deref() == Some(wanted.as_str()) || caller.agent_name.as_deref() == Some(wanted.as_str())
        };
        self.uses().is_none_or(|uses| used < uses)
            && when.model.as_ref().is_none_or(|m| *m == request.model)
            && when.agent.as_ref().is_none_or(agent)
            && when.message_contains.as_ref().is_none_or(|s| last_user.is_some_and(|m| m.contains(s.as_str())))
            && self.pattern.as_ref().is_none_or(|p| last_user.is_some_and(|m| p.is_match(m)))
            && when.last.is_none_or(|wanted| last == Some(wanted))
            && when.round.is_none_or(|round| round == caller.round)
    }

    /// The reply for use number `used`, counting it.
    fn take(&self, used: &mut u64) -> MockReply {
        let reply = self.rule.replies[(*used as usize) % self.rule.replies.len()].clone();
        *used += 1;
        reply
    }
}

/// A rule and how many requests it answered, as the control API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleView {
    #[serde(flatten)]
    pub rule: MockRule,
    pub used: u64,
}

impl Mock {
    /// The mock with the rules of a `PALAVER_MOCK_SCRIPT` file, for every workspace.
    pub fn with_script(script: MockScript) -> Self {
        let global = script.rules.into_iter().map(Rule::new).collect();
        Mock { scripts: Mutex::new(Scripts { global, scopes: HashMap::new() }) }
    }

    fn scripts(&self) -> std::sync::MutexGuard<'_, Scripts> {
        self.scripts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds validated rules after the workspace's others; returns them all.
    /// `Err` with the number held when the workspace would hold more than `MAX_RULES`.
    pub fn add_rules(&self, workspace: &str, rules: Vec<MockRule>) -> Result<Vec<RuleView>, usize> {
        let mut scripts = self.scripts();
        let scope = scripts.scopes.entry(workspace.to_owned()).or_default();
        if scope.rules.len() + rules.len() > MAX_RULES {
            return Err(scope.rules.len());
        }
        scope.rules.extend(rules.into_iter().map(Rule::new));
        Ok(views(&scope.rules))
    }

    pub fn rules(&self, workspace: &str) -> Vec<RuleView> {
        self.scripts().scopes.get(workspace).map(|scope| views(&scope.rules)).unwrap_or_default()
    }

    /// Forgets the workspace's rules and journal.
    pub fn reset(&self, workspace: &str) {
        self.scripts().scopes.remove(workspace);
    }

    /// The requests the model received for the workspace, oldest first.
    pub fn journal(&self, workspace: &str) -> Vec<Value> {
        self.scripts().scopes.get(workspace).map(|scope| scope.journal.iter().cloned().collect()).unwrap_or_default()
    }

    /// Journals the request and takes the first matching rule's reply, if any.
    fn scripted(&self, request: &ChatRequest<'_>, messages: &[ChatMessage<'_>]) -> Option<MockReply> {
        let last_user = match messages.last() {
            Some(ChatMessage::User { content }) => Some(content.text()),
            _ => None,
        };
        let last = match messages.last() {
            Some(ChatMessage::User { .. }) => Some(Last::User),
            Some(ChatMessage::Tool { .. }) => Some(Last::Tool),
            _ => None,
        };
        // Built before the lock: the lock is the whole process's.
        let entry = journal_entry(request, messages);
        let mut scripts = self.scripts();
        let Scripts { global, scopes } = &mut *scripts;
        let workspace = request.caller.workspace.as_deref().unwrap_or_default();
        let scope = scopes.entry(workspace.to_owned()).or_default();
        if scope.journal.len() == JOURNAL_LIMIT {
            scope.journal.pop_front();
        }
        scope.journal.push_back(entry);
        let last_user = last_user.as_deref();
        for rule in &mut scope.rules {
            let mut used = rule.used;
            if rule.matches(used, request, last_user, last) {
                let reply = rule.take(&mut used);
                rule.used = used;
                return Some(reply);
            }
        }
        scope.global_used.resize(global.len(), 0);
        for (rule, used) in global.iter().zip(scope.global_used.iter_mut()) {
            if rule.matches(*used, request, last_user, last) {
                return Some(rule.take(used));
            }
        }
        None
    }
}

fn views(rules: &[Rule]) -> Vec<RuleView> {
    rules.iter().map(|r| RuleView { rule: r.rule.clone(), used: r.used }).collect()
}

/// What the journal keeps of a request: what an upstream would have received, and who asked.
fn journal_entry(request: &ChatRequest<'_>, messages: &[ChatMessage<'_>]) -> Value {
    serde_json::json!({
        "model": request.model,
        "agent_id": request.caller.agent_id,
        "round": request.caller.round,
        "messages": messages,
        "tools": request.tools,
        "completion_args": request.args,
    })
}

/// What the model answers to `request`.
enum Answer {
    Text(String),
    Calls(Vec<(String, String)>),
}

/// A scripted reply as the model's answer.
fn reply(reply: MockReply, request: &ChatRequest<'_>) -> Result<Answer, Error> {
    if let Some(error) = reply.error {
        let message = error.message.unwrap_or_else(|| format!("mock: scripted HTTP {}", error.status));
        return Err(Error::upstream(error.status, message));
    }
    if let Some(agent) = reply.handoff {
        return Ok(Answer::Calls(vec![(format!("handoff_to_{agent}"), "{}".to_owned())]));
    }
    if let Some(calls) = reply.calls {
        let calls = calls.into_iter().map(|c| (c.name, Value::Object(c.arguments.unwrap_or_default()).to_string()));
        return Ok(Answer::Calls(calls.collect()));
    }
    Ok(Answer::Text(reply.text.unwrap_or_else(|| echo::answer(request))))
}

impl Mock {
    fn decide(&self, request: &ChatRequest<'_>) -> Result<(Answer, Option<Duration>, Option<MockUsage>), Error> {
        let messages = request.all_messages();
        if let Some(scripted) = self.scripted(request, &messages) {
            let rate = scripted.tokens_per_second.and_then(|rate| Duration::try_from_secs_f64(1.0 / rate).ok());
            let (delay, usage) = (scripted.delay_ms.map(Duration::from_millis).or(rate), scripted.usage);
            return Ok((reply(scripted, request)?, delay, usage));
        }
        let (answer, delay) = unscripted(request, &messages)?;
        Ok((answer, delay, None))
    }
}

/// Directives, auto mode, or echo.
fn unscripted(request: &ChatRequest<'_>, messages: &[ChatMessage<'_>]) -> Result<(Answer, Option<Duration>), Error> {
    match messages.last() {
        Some(ChatMessage::User { content }) => {
            let found = directives(&content.text());
            if let Some(status) = found.error {
                return Err(Error::upstream(status, format!("mock: the message asked for an HTTP {status}")));
            }
            if !found.calls.is_empty() {
                return Ok((Answer::Calls(found.calls), found.delay));
            }
            let automatic = auto_calls(&request.tools);
            if !automatic.is_empty() {
                return Ok((Answer::Calls(automatic), found.delay));
            }
            let text = if found.text.is_empty() { echo::answer(request) } else { found.text };
            Ok((Answer::Text(text), found.delay))
        }
        // After the calls' results: a summary of what came back.
        Some(ChatMessage::Tool { .. }) => {
            let results: Vec<String> = messages
                .iter()
                .rev()
                .map_while(|m| match m {
                    ChatMessage::Tool { name, content, .. } => Some(format!("{name}: {content}")),
                    _ => None,
                })
                .collect();
            let results: Vec<String> = results.into_iter().rev().collect();
            Ok((Answer::Text(format!("mock: the tools answered — {}", results.join("; "))), None))
        }
        _ => Ok((Answer::Text(echo::answer(request)), None)),
    }
}

/// Auto mode: each offered function once (handoffs aside: one would supersede the rest).
fn auto_calls(tools: &[ChatTool<'_>]) -> Vec<(String, String)> {
    tools
        .iter()
        .filter(|tool| !tool.function.name.starts_with("handoff_to_"))
        .map(|tool| {
            let schema = Value::Object(tool.function.parameters.as_ref().clone());
            (tool.function.name.to_string(), example(&schema).to_string())
        })
        .collect()
}

#[async_trait::async_trait]
impl ModelBackend for Mock {
    async fn chat_stream(&self, request: ChatRequest<'_>) -> Result<DeltaStream, Error> {
        let (answer, delay, usage) = self.decide(&request)?;
        let prompt_tokens = request.messages.len() as u64;
        let mut deltas: Vec<ChatDelta> = match answer {
            Answer::Text(text) => echo::word_pieces(&text).into_iter().map(ChatDelta::Text).collect(),
            Answer::Calls(calls) => calls
                .into_iter()
                .enumerate()
                .map(|(index, (name, arguments))| {
                    let id = Some(generate_tool_call_id());
                    ChatDelta::ToolCall(ToolCallDelta { index: index as u32, id, name: Some(name), arguments })
                })
                .collect(),
        };
        let (prompt_tokens, completion_tokens) = match usage {
            Some(usage) => (usage.prompt_tokens, usage.completion_tokens),
            None => (prompt_tokens, deltas.len() as u64),
        };
        let usage = Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
        deltas.push(ChatDelta::Usage(usage));
        let stream = futures::stream::iter(deltas).then(move |delta| async move {
            if let (Some(delay), false) = (delay, matches!(delta, ChatDelta::Usage(_))) {
                tokio::time::sleep(delay).await;
            }
            Ok(delta)
        });
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn directives_are_read_and_taken_out_of_the_answer() {
        let found = directives(
            r#"Look [[call:get_weather {"city": "Paris", "note": "a ]] b"}]] and [[call:now]] [[slow:25]] up"#,
        );

        assert_eq!(
            found.calls,
            vec![
                ("get_weather".to_owned(), r#"{"city":"Paris","note":"a ]] b"}"#.to_owned()),
                ("now".to_owned(), "{}".to_owned())
            ]
        );
        assert_eq!(found.delay, Some(Duration::from_millis(25)));
        assert_eq!(found.text, "Look and up");
        assert_eq!(directives("x [[error:429]]").error, Some(429));
    }

    #[test]
    fn text_that_only_looks_like_a_directive_stays_text() {
        for text in ["[[call: {}]]", "[[call:f [1]]]", "[[error:soon]]", "[[slow:5", "a [[b]] c", "[[call:f {\"a\":"] {
            let found = directives(text);

            assert_eq!(
                found,
                Directives { text: text.split_whitespace().collect::<Vec<_>>().join(" "), ..Default::default() },
                "{text}"
            );
        }
    }

    #[test]
    fn schema_examples_fill_every_property_with_its_type() {
        let schema = json!({"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"},
            "unit": {"type": "string", "enum": ["c", "f"]}, "tags": {"type": "array", "items": {"type": "string"}},
            "at": {"type": "object", "properties": {"lat": {"type": "number"}}}, "maybe": {"type": ["null", "integer"]}
        }});

        assert_eq!(
            example(&schema),
            json!({"city": "text", "days": 1, "metric": true, "unit": "c", "tags": ["text"], "at": {"lat": 1.5}, "maybe": 1})
        );
    }
}
