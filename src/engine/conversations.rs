//! Conversation rules: what start, append and restart mean (DESIGN decision 3), checked
//! and loaded before a run starts, and the read side (get, list, history, messages).

use super::agents as agent_rules;
use super::history::History;
use super::run::{Settings, TurnPlan};
use super::Engine;
use crate::domain::agents::VersionSelector;
use crate::domain::completion::{CompletionArgs, CompletionArgsView};
use crate::domain::conversations::{
    AgentConversation, AgentVersionRef, AppendConversationRequest, Confirmation, Conversation, ConversationHistory,
    ConversationMessages, HandoffExecution, ModelConversation, RestartConversationRequest, StartConversationRequest,
    ToolConfirmation,
};
use crate::domain::entries::{Entry, EntryObject, FunctionCall, FunctionResult, Inputs};
use crate::domain::ids::{AgentId, ConversationId, EntryId, WorkspaceId};
use crate::domain::limits;
use crate::domain::time::Timestamp;
use crate::domain::tools::validate_tools;
use crate::error::{Error, FieldError, Result};
use crate::store::{AgentRecord, ConversationRecord, Page, StoreError};
use crate::telemetry;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;

fn invalid(path: &[&str], kind: &'static str, msg: impl Into<String>) -> Error {
    let loc: Vec<_> = path.iter().map(|p| (*p).into()).collect();
    Error::invalid(FieldError::body(&loc, kind, msg))
}

fn selector(version: &Option<AgentVersionRef>) -> Result<VersionSelector> {
    match version {
        None => Ok(VersionSelector::Active),
        Some(AgentVersionRef::Number(n)) if *n >= 0 => Ok(VersionSelector::Number(*n)),
        Some(AgentVersionRef::Alias(alias)) => VersionSelector::parse(alias).ok_or_else(|| {
            invalid(
                &["agent_version"],
                "value_error",
                format!("`{alias}` is neither a version number nor an alias name"),
            )
        }),
        Some(AgentVersionRef::Number(n)) => {
            Err(invalid(&["agent_version"], "value_error", format!("Input should be at least 0, got {n}")))
        }
    }
}

/// The settings an agent version runs with: its own completion arguments overridden by
/// `args` (the conversation's, or the turn's).
fn agent_settings(agent: AgentRecord, args: &CompletionArgs) -> Settings {
    let config = agent.config;
    Settings {
        model: config.model,
        agent_id: Some(agent.id.0),
        agent_name: Some(config.name),
        description: config.description,
        instructions: config.instructions,
        tools: config.tools,
        args: config.completion_args.overridden_by(args),
        handoffs: config.handoffs.unwrap_or_default(),
    }
}

/// The arguments a conversation's agents run with beyond their own: the conversation's,
/// overridden by this turn's.
fn args_of(conversation: &ConversationRecord, turn_args: Option<&CompletionArgs>) -> CompletionArgs {
    let stored = conversation.completion_args.clone().unwrap_or_default();
    match turn_args {
        Some(turn_args) => stored.overridden_by(turn_args),
        None => stored,
    }
}

/// The settings the next turn starts with (DESIGN decision 10): the agent in force on the
/// branch — the target of the branch's last `agent.handoff` (its active version), else
/// the conversation's own agent (`agent`, when the store read it with the conversation)
/// — or a model conversation's own settings. A handoff target that has been deleted since
/// leaves the conversation's own agent in force.
async fn settings(
    engine: &Engine,
    ws: &WorkspaceId,
    conversation: &ConversationRecord,
    agent: Option<AgentRecord>,
    turn_args: Option<&CompletionArgs>,
    branch: &[Arc<Entry>],
) -> Result<Settings> {
    let args = args_of(conversation, turn_args);
    let Some(agent_id) = &conversation.agent_id else {
        return Ok(Settings {
            model: conversation.model.clone().unwrap_or_default(),
            agent_id: None,
            agent_name: None,
            description: None,
            instructions: conversation.instructions.clone(),
            tools: conversation.tools.clone().unwrap_or_default(),
            args,
            handoffs: Vec::new(),
        });
    };
    let handed_to = branch.iter().rev().find_map(|entry| match entry.as_ref() {
        Entry::AgentHandoff(handoff) => Some(&handoff.next_agent_id),
        _ => None,
    });
    if let Some(target) = handed_to.filter(|target| *target != agent_id) {
        match engine.store.agent(ws, &AgentId(target.clone()), &VersionSelector::Active).await {
            Ok(target) => return Ok(agent_settings(target, &args)),
            Err(StoreError::NotFound { .. }) => {
                tracing::info!(agent_id = %target, "the agent handed off to is gone; the conversation's agent answers");
            }
            Err(other) => return Err(other.into()),
        }
    }
    let agent = match agent {
        Some(agent) => agent,
        None => {
            let version = selector(&conversation.agent_version)?;
            agent_rules::load(engine, ws, &AgentId(agent_id.clone()), &version).await?
        }
    };
    Ok(agent_settings(agent, &args))
}

/// The agents a turn that starts with `first` may hand off to, directly or through one
/// another, up to `depth` handoffs away: one read per level of the handoff graph, and none
/// for an agent without handoffs. `first` is among them when a cycle leads back to it.
async fn handoff_targets(
    engine: &Engine,
    ws: &WorkspaceId,
    first: &Settings,
    conversation: &ConversationRecord,
    turn_args: Option<&CompletionArgs>,
) -> Result<Vec<Settings>> {
    if first.handoffs.is_empty() {
        return Ok(Vec::new());
    }
    let turn_args = args_of(conversation, turn_args);
    let mut targets = vec![first.clone()];
    let mut seen: HashSet<String> = first.agent_id.iter().cloned().collect();
    let mut wanted = first.handoffs.clone();
    for _ in 0..engine.limits.max_handoffs.max(1) {
        wanted.retain(|id| seen.insert(id.clone()));
        if wanted.is_empty() {
            break;
        }
        let found = engine.store.active_agents(ws, &wanted).await?;
        wanted = found.iter().flat_map(|a| a.config.handoffs.iter().flatten().cloned()).collect();
        targets.extend(found.into_iter().map(|agent| agent_settings(agent, &turn_args)));
    }
    Ok(targets)
}

fn validate_args(args: &Option<CompletionArgs>) -> Result<()> {
    let mut errors = Vec::new();
    if let Some(args) = args {
        args.validate(&["completion_args".into()], &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(errors))
    }
}

/// Reads `inputs`; `required` turns an absent or empty value into a 422.
fn read_inputs(inputs: Option<Inputs>, required: bool, now: Timestamp) -> Result<Vec<Entry>> {
    let entries = match inputs {
        Some(inputs) => inputs.into_entries(now)?,
        None if required => return Err(invalid(&["inputs"], "missing", "Field required")),
        None => Vec::new(),
    };
    let mut errors = Vec::new();
    limits::list(Some(&entries), limits::MAX_INPUTS, &[], "inputs", &mut errors);
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let empty = entries.is_empty()
        || entries.iter().all(|e| matches!(e, Entry::MessageInput(m) if m.content.text().is_empty() && matches!(m.content, crate::domain::entries::Content::Text(_))));
    if required && empty {
        return Err(invalid(&["inputs"], "too_short", "Inputs should hold at least one non-empty entry"));
    }
    Ok(entries)
}

/// Every call must be answered once before the model runs again (it cannot continue past
/// an open call): client functions by `function.result` inputs, calls to server-side tools
/// that wait for a confirmation by `tool_confirmations` (or a result). A result or a
/// confirmation for an unknown or already answered call is a 422.
///
/// Returns the calls the client allowed, to run before the model; each denied call gets a
/// `function.result` input telling the model so.
fn answer_calls<'a>(
    history: impl IntoIterator<Item = &'a Entry>,
    inputs: &mut Vec<Entry>,
    confirmations: &[ToolConfirmation],
    now: Timestamp,
) -> Result<Vec<FunctionCall>> {
    let mut open: Vec<&FunctionCall> = Vec::new();
    fn close<'e>(open: &mut Vec<&'e FunctionCall>, id: &str) -> Option<&'e FunctionCall> {
        open.iter().position(|c| c.tool_call_id == id).map(|i| open.remove(i))
    }
    let mut seen: HashSet<&str> = HashSet::new();
    let answered = |id: &str, seen: &HashSet<&str>, what: &str| {
        if seen.contains(id) {
            format!("Tool call `{id}` already has a result")
        } else {
            format!("No tool call `{id}` is waiting for {what}")
        }
    };
    for entry in history {
        match entry {
            Entry::FunctionCall(call) => {
                seen.insert(&call.tool_call_id);
                open.push(call);
            }
            Entry::FunctionResult(result) => {
                close(&mut open, &result.tool_call_id);
            }
            Entry::ToolExecution(execution) => {
                if let Some(id) = execution.tool_call_id() {
                    close(&mut open, id);
                }
            }
            _ => {}
        }
    }
    let mut calls_in_inputs: Vec<FunctionCall> = Vec::new();
    for (index, entry) in inputs.iter().enumerate() {
        match entry {
            Entry::FunctionCall(call) => calls_in_inputs.push(call.clone()),
            Entry::FunctionResult(result) => {
                let id = result.tool_call_id.as_str();
                let known = close(&mut open, id).is_some();
                let in_inputs = calls_in_inputs.iter().position(|c| c.tool_call_id == id);
                if let Some(i) = in_inputs {
                    calls_in_inputs.remove(i);
                } else if !known {
                    let loc = ["inputs".into(), index.into(), "tool_call_id".into()];
                    return Err(Error::invalid(FieldError::body(&loc, "value_error", answered(id, &seen, "a result"))));
                }
            }
            _ => {}
        }
    }
    let mut allowed = Vec::new();
    let mut denials = Vec::new();
    for (index, confirmation) in confirmations.iter().enumerate() {
        let id = confirmation.tool_call_id.as_str();
        let loc = ["tool_confirmations".into(), index.into(), "tool_call_id".into()];
        let call = match open.iter().position(|c| c.tool_call_id == id) {
            Some(i) if open[i].confirmation_status.as_deref() == Some("pending") => open.remove(i),
            Some(_) => {
                let msg =
                    format!("Tool call `{id}` is a client function call: answer it with a `function.result` input");
                return Err(Error::invalid(FieldError::body(&loc, "value_error", msg)));
            }
            None => {
                let msg = answered(id, &seen, "a confirmation");
                return Err(Error::invalid(FieldError::body(&loc, "value_error", msg)));
            }
        };
        match confirmation.confirmation {
            Confirmation::Allow => allowed.push(call.clone()),
            Confirmation::Deny => denials.push(Entry::FunctionResult(FunctionResult {
                object: EntryObject,
                id: EntryId::generate("fr_"),
                created_at: now,
                completed_at: None,
                tool_call_id: call.tool_call_id.clone(),
                result: super::tools::DENIED.to_owned(),
            })),
        }
    }
    if !open.is_empty() || !calls_in_inputs.is_empty() {
        let ids = open
            .iter()
            .map(|c| &c.tool_call_id)
            .chain(calls_in_inputs.iter().map(|c| &c.tool_call_id))
            .map(|id| format!("`{id}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let msg = format!("Answer each open tool call first (a `function.result` input, or a confirmation): {ids}");
        return Err(invalid(&["inputs"], "value_error", msg));
    }
    if !confirmations.is_empty() && inputs.iter().any(|e| !matches!(e, Entry::FunctionResult(_))) {
        // The answers must follow the calls directly in the model's view; a message would
        // sit between a call and its answer.
        let msg = "Send new messages in the next append, once the confirmed tool calls have run";
        return Err(invalid(&["inputs"], "value_error", msg));
    }
    // Denials answer calls made before this append's inputs: they come first.
    inputs.splice(0..0, denials);
    Ok(allowed)
}

/// `POST /v1/conversations`: a new conversation with an agent or a model.
pub async fn plan_start(engine: &Engine, ws: &WorkspaceId, request: StartConversationRequest) -> Result<TurnPlan> {
    let now = Timestamp::now();
    match (&request.agent_id, &request.model) {
        (Some(_), Some(_)) => {
            return Err(invalid(&["model"], "value_error", "Give either `agent_id` or `model`, not both"));
        }
        (None, None) => return Err(invalid(&["agent_id"], "missing", "Give either `agent_id` or `model`")),
        _ => {}
    }
    if request.agent_id.is_some() {
        for (name, present) in [("instructions", request.instructions.is_some()), ("tools", request.tools.is_some())] {
            if present {
                let msg = format!("`{name}` belongs to model conversations; change the agent instead");
                return Err(invalid(&[name], "extra_forbidden", msg));
            }
        }
    } else if request.agent_version.is_some() {
        return Err(invalid(&["agent_version"], "extra_forbidden", "`agent_version` needs an `agent_id`"));
    }
    if let Some(model) = &request.model {
        if model.trim().is_empty() {
            return Err(invalid(&["model"], "string_too_short", "String should have at least 1 character"));
        }
    }
    let mut errors = Vec::new();
    if let Some(tools) = &request.tools {
        validate_tools(tools, &["tools".into()], &mut errors);
    }
    if let Some(args) = &request.completion_args {
        args.validate(&["completion_args".into()], &mut errors);
    }
    limits::string(request.model.as_deref(), limits::MAX_NAME_CHARS, &[], "model", &mut errors);
    limits::string(request.name.as_deref(), limits::MAX_NAME_CHARS, &[], "name", &mut errors);
    limits::string(request.description.as_deref(), limits::MAX_DESCRIPTION_CHARS, &[], "description", &mut errors);
    let instructions = request.instructions.as_deref();
    limits::string(instructions, limits::MAX_INSTRUCTIONS_CHARS, &[], "instructions", &mut errors);
    limits::list(request.tools.as_deref(), limits::MAX_TOOLS, &[], "tools", &mut errors);
    limits::metadata(request.metadata.as_ref(), &[], &mut errors);
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let mut inputs = read_inputs(request.inputs, true, now)?;
    answer_calls([], &mut inputs, &[], now)?;
    let conversation = ConversationRecord {
        id: ConversationId::generate(),
        head: None,
        agent_id: request.agent_id,
        agent_version: request.agent_version,
        model: request.model,
        instructions: request.instructions,
        tools: request.tools,
        completion_args: request.completion_args,
        guardrails: request.guardrails,
        name: request.name,
        description: request.description,
        metadata: request.metadata,
        created_at: now,
        updated_at: now,
    };
    let settings = settings(engine, ws, &conversation, None, None, &[]).await?;
    let mut plan =
        plan(ws, conversation, true, request.store.unwrap_or(true), None, None, History::default(), inputs, settings);
    plan.targets = handoff_targets(engine, ws, &plan.settings, &plan.conversation, None).await?;
    plan.handoff_execution = request.handoff_execution.unwrap_or(HandoffExecution::Server);
    Ok(plan)
}

#[allow(clippy::too_many_arguments)]
fn plan(
    ws: &WorkspaceId,
    conversation: ConversationRecord,
    create: bool,
    store: bool,
    expected_head: Option<EntryId>,
    parent: Option<(EntryId, i64)>,
    history: History,
    inputs: Vec<Entry>,
    settings: Settings,
) -> TurnPlan {
    TurnPlan {
        ws: ws.clone(),
        conversation: Box::new(conversation),
        create,
        store,
        expected_head,
        parent,
        history,
        inputs,
        settings,
        targets: Vec::new(),
        handoff_execution: HandoffExecution::Server,
        confirmed: Vec::new(),
    }
}

async fn load(engine: &Engine, ws: &WorkspaceId, id: &ConversationId) -> Result<ConversationRecord> {
    Ok(engine.store.conversation(ws, id).await?)
}

/// The conversation a turn builds on, with the agent version it runs with when the store
/// could read both at once.
async fn load_for_turn(
    engine: &Engine,
    ws: &WorkspaceId,
    id: &ConversationId,
) -> Result<(ConversationRecord, Option<AgentRecord>)> {
    let read = engine.store.conversation_for_turn(ws, id);
    Ok(telemetry::store_operation("conversation_for_turn", engine.store.system(), read).await?)
}

/// The conversation's branch, from the cache when a turn already produced it.
async fn history_of(engine: &Engine, ws: &WorkspaceId, conversation: &ConversationRecord) -> Result<History> {
    let Some(head) = &conversation.head else {
        return Ok(History::default());
    };
    if let Some(history) = engine.histories.get(ws, head) {
        telemetry::history_cache(true);
        return Ok(history);
    }
    telemetry::history_cache(false);
    let read = telemetry::store_operation("history", engine.store.system(), engine.store.history(ws, head)).await;
    let entries = History::new(read?.into_iter().map(Arc::new).collect());
    engine.histories.insert(ws, head, entries.clone());
    Ok(entries)
}

/// `POST /v1/conversations/{id}`: the next turn, built on the current head.
pub async fn plan_append(
    engine: &Engine,
    ws: &WorkspaceId,
    id: &ConversationId,
    request: AppendConversationRequest,
) -> Result<TurnPlan> {
    let now = Timestamp::now();
    validate_args(&request.completion_args)?;
    let mut inputs = read_inputs(request.inputs, false, now)?;
    let confirmations = request.tool_confirmations.unwrap_or_default();
    let mut errors = Vec::new();
    let bound = limits::MAX_TOOL_CONFIRMATIONS;
    limits::list(Some(&confirmations), bound, &[], "tool_confirmations", &mut errors);
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let (conversation, agent) = load_for_turn(engine, ws, id).await?;
    let history = history_of(engine, ws, &conversation).await?;
    let confirmed = answer_calls(history.iter().map(|e| e.as_ref()), &mut inputs, &confirmations, now)?;
    let turn_args = request.completion_args.as_ref();
    let settings = settings(engine, ws, &conversation, agent, turn_args, &history).await?;
    let head = conversation.head.clone();
    let parent = head.clone().map(|h| (h, history.len() as i64 - 1));
    let store = request.store.unwrap_or(true);
    let mut plan = plan(ws, conversation, false, store, head, parent, history, inputs, settings);
    plan.confirmed = confirmed;
    plan.targets = handoff_targets(engine, ws, &plan.settings, &plan.conversation, turn_args).await?;
    plan.handoff_execution = request.handoff_execution.unwrap_or(HandoffExecution::Server);
    Ok(plan)
}

/// `POST /v1/conversations/{id}/restart`: a new conversation sharing the original's
/// entries up to and including `from_entry_id`, then the new turn. The original is not
/// touched and nothing is copied.
pub async fn plan_restart(
    engine: &Engine,
    ws: &WorkspaceId,
    id: &ConversationId,
    request: RestartConversationRequest,
) -> Result<TurnPlan> {
    let now = Timestamp::now();
    validate_args(&request.completion_args)?;
    let mut errors = Vec::new();
    limits::metadata(request.metadata.as_ref(), &[], &mut errors);
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let mut inputs = read_inputs(request.inputs, false, now)?;
    let (original, agent) = load_for_turn(engine, ws, id).await?;
    // The original's agent version holds only when the restart keeps its selector.
    let agent = agent.filter(|_| request.agent_version.is_none());
    if original.agent_id.is_none() && request.agent_version.is_some() {
        return Err(invalid(
            &["agent_version"],
            "extra_forbidden",
            "`agent_version` applies to agent conversations only",
        ));
    }
    let branch = history_of(engine, ws, &original).await?;
    let Some(position) = branch.iter().position(|e| e.id().as_str() == request.from_entry_id) else {
        return Err(Error::NotFound {
            what: "Entry",
            id: format!("{}` in conversation `{}", request.from_entry_id, id),
        });
    };
    let history = History::new(branch[..=position].to_vec());
    answer_calls(history.iter().map(|e| e.as_ref()), &mut inputs, &[], now)?;
    let parent = Some((history[position].id().clone(), position as i64));
    let conversation = ConversationRecord {
        id: ConversationId::generate(),
        head: None,
        agent_version: request.agent_version.or(original.agent_version.clone()),
        guardrails: request.guardrails.or(original.guardrails.clone()),
        metadata: request.metadata.or(original.metadata.clone()),
        created_at: now,
        updated_at: now,
        ..original
    };
    let turn_args = request.completion_args.as_ref();
    let settings = settings(engine, ws, &conversation, agent, turn_args, &history).await?;
    let store = request.store.unwrap_or(true);
    let mut plan = plan(ws, conversation, true, store, None, parent, history, inputs, settings);
    plan.targets = handoff_targets(engine, ws, &plan.settings, &plan.conversation, turn_args).await?;
    plan.handoff_execution = request.handoff_execution.unwrap_or(HandoffExecution::Server);
    Ok(plan)
}

pub fn to_wire(record: ConversationRecord) -> Conversation {
    match record.agent_id {
        Some(agent_id) => Conversation::Agent(AgentConversation {
            object: "conversation",
            id: record.id,
            created_at: record.created_at,
            updated_at: record.updated_at,
            agent_id,
            agent_version: record.agent_version,
            name: record.name,
            description: record.description,
            metadata: record.metadata,
        }),
        None => Conversation::Model(Box::new(ModelConversation {
            object: "conversation",
            id: record.id,
            created_at: record.created_at,
            updated_at: record.updated_at,
            model: record.model.unwrap_or_default(),
            instructions: record.instructions,
            tools: record.tools.unwrap_or_default(),
            completion_args: CompletionArgsView(record.completion_args.unwrap_or_default()),
            guardrails: record.guardrails,
            name: record.name,
            description: record.description,
            metadata: record.metadata,
        })),
    }
}

pub async fn get_conversation(engine: &Engine, ws: &WorkspaceId, id: &ConversationId) -> Result<Conversation> {
    Ok(to_wire(load(engine, ws, id).await?))
}

pub async fn list_conversations(
    engine: &Engine,
    ws: &WorkspaceId,
    page: i64,
    page_size: i64,
    metadata: Option<&Map<String, Value>>,
) -> Result<Vec<Conversation>> {
    let page = Page { offset: page * page_size, limit: page_size };
    Ok(engine.store.list_conversations(ws, metadata, page).await?.into_iter().map(to_wire).collect())
}

pub async fn delete_conversation(engine: &Engine, ws: &WorkspaceId, id: &ConversationId) -> Result<()> {
    Ok(engine.store.delete_conversation(ws, id).await?)
}

pub async fn history(engine: &Engine, ws: &WorkspaceId, id: &ConversationId) -> Result<ConversationHistory> {
    let conversation = load(engine, ws, id).await?;
    let entries = history_of(engine, ws, &conversation).await?.to_vec();
    Ok(ConversationHistory { object: "conversation.history", conversation_id: conversation.id, entries })
}

pub async fn messages(engine: &Engine, ws: &WorkspaceId, id: &ConversationId) -> Result<ConversationMessages> {
    let conversation = load(engine, ws, id).await?;
    let messages = history_of(engine, ws, &conversation).await?.iter().filter(|e| e.is_message()).cloned().collect();
    Ok(ConversationMessages { object: "conversation.messages", conversation_id: conversation.id, messages })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Loc;
    use serde_json::json;

    fn entry(value: Value) -> Entry {
        let mut value = value;
        value["created_at"] = json!("2026-01-01T00:00:00Z");
        value["completed_at"] = Value::Null;
        serde_json::from_value(value).unwrap()
    }

    fn call(tool_call_id: &str, pending: bool) -> Entry {
        let mut value = json!({"type": "function.call", "id": format!("fc_{tool_call_id}"), "tool_call_id": tool_call_id,
            "name": "f", "arguments": "{}", "agent_id": null, "model": null});
        if pending {
            value["confirmation_status"] = json!("pending");
        }
        entry(value)
    }

    fn result(tool_call_id: &str) -> Entry {
        entry(json!({"type": "function.result", "id": format!("fr_{tool_call_id}"), "tool_call_id": tool_call_id,
            "result": "ok"}))
    }

    fn message(text: &str) -> Entry {
        entry(json!({"type": "message.input", "id": "msg_in", "role": "user", "content": text}))
    }

    fn confirm(tool_call_id: &str, confirmation: Confirmation) -> ToolConfirmation {
        ToolConfirmation { tool_call_id: tool_call_id.into(), confirmation }
    }

    fn field_error(result: Result<Vec<FunctionCall>>) -> FieldError {
        match result {
            Err(Error::Invalid(mut errors)) => errors.remove(0),
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn a_result_answers_the_open_call_and_nothing_is_left_to_run() {
        let history = [message("hi"), call("c1", false)];
        let mut inputs = vec![result("c1")];

        let allowed = answer_calls(&history, &mut inputs, &[], Timestamp::now()).unwrap();

        assert!(allowed.is_empty());
        assert_eq!(inputs, vec![result("c1")]);
    }

    #[test]
    fn a_new_message_while_a_call_is_open_is_refused_naming_the_call() {
        let history = [call("c1", false)];
        let mut inputs = vec![message("next")];

        let error = field_error(answer_calls(&history, &mut inputs, &[], Timestamp::now()));

        assert_eq!(error.loc, vec![Loc::from("body"), "inputs".into()]);
        assert!(error.msg.contains("`c1`"), "{}", error.msg);
    }

    #[test]
    fn a_result_for_an_unknown_or_answered_call_is_refused_at_its_position() {
        let history = [call("c1", false), result("c1")];

        let unknown = field_error(answer_calls(&history, &mut vec![result("zz")], &[], Timestamp::now()));
        let twice = field_error(answer_calls(&history, &mut vec![result("c1")], &[], Timestamp::now()));

        assert_eq!(unknown.loc, vec![Loc::from("body"), "inputs".into(), 0.into(), "tool_call_id".into()]);
        assert_eq!(unknown.msg, "No tool call `zz` is waiting for a result");
        assert_eq!(twice.msg, "Tool call `c1` already has a result");
    }

    #[test]
    fn a_call_and_its_result_sent_together_by_the_client_balance_out() {
        let mut inputs = vec![call("c9", false), result("c9"), message("and then?")];

        let allowed = answer_calls(&[], &mut inputs, &[], Timestamp::now()).unwrap();

        assert!(allowed.is_empty());
        assert_eq!(inputs.len(), 3);
    }

    #[test]
    fn an_allowed_confirmation_runs_the_call_and_a_denied_one_becomes_a_result_first() {
        let history = [call("c1", true), call("c2", true)];
        let mut inputs = Vec::new();
        let confirmations = [confirm("c1", Confirmation::Allow), confirm("c2", Confirmation::Deny)];

        let allowed = answer_calls(&history, &mut inputs, &confirmations, Timestamp::now()).unwrap();

        assert_eq!(allowed.iter().map(|c| c.tool_call_id.as_str()).collect::<Vec<_>>(), ["c1"]);
        match inputs.as_slice() {
            [Entry::FunctionResult(denied)] => {
                assert_eq!(denied.tool_call_id, "c2");
                assert_eq!(denied.result, crate::engine::tools::DENIED);
            }
            other => panic!("one denial expected, got {other:?}"),
        }
    }

    #[test]
    fn confirming_a_client_function_or_an_unknown_call_is_refused() {
        let history = [call("c1", false)];

        let client =
            field_error(answer_calls(&history, &mut vec![], &[confirm("c1", Confirmation::Allow)], Timestamp::now()));
        let unknown =
            field_error(answer_calls(&[], &mut vec![], &[confirm("zz", Confirmation::Deny)], Timestamp::now()));

        assert!(client.msg.contains("client function call"), "{}", client.msg);
        assert_eq!(unknown.loc, vec![Loc::from("body"), "tool_confirmations".into(), 0.into(), "tool_call_id".into()]);
    }

    #[test]
    fn confirmations_come_with_no_new_message() {
        let history = [call("c1", true)];

        let error = field_error(answer_calls(
            &history,
            &mut vec![message("also this")],
            &[confirm("c1", Confirmation::Allow)],
            Timestamp::now(),
        ));

        assert!(error.msg.starts_with("Send new messages in the next append"), "{}", error.msg);
    }

    #[test]
    fn a_server_run_answers_the_call_it_ran() {
        let execution = entry(json!({"type": "tool.execution", "id": "tool_exec_1", "name": "t", "arguments": "{}",
            "info": {"tool_call_id": "c1", "output": "x"}, "agent_id": null, "model": null}));
        let history = [call("c1", true), execution];

        let allowed = answer_calls(&history, &mut vec![message("next")], &[], Timestamp::now()).unwrap();

        assert!(allowed.is_empty());
    }
}
