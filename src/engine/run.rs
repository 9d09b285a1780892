//! The run loop (DESIGN decisions 1 and 2): one loop for start, append and restart that
//! calls the model, turns its deltas into typed events, and stores the whole turn in one
//! transaction when it ends. A failed run stores nothing.
//!
//! The run owns a task and feeds a bounded channel. A client that goes away stops
//! receiving, not the run: the turn still commits when it ends.

use super::context;
use super::fold::Fold;
use super::tools::Toolbox;
use crate::backends::chat::{ChatDelta, ChatRequest, DeltaStream, StoredMessages};
use crate::domain::completion::CompletionArgs;
use crate::domain::entries::{execution_info, Entry, FunctionCall};
use crate::domain::events::RunEvent;
use crate::domain::ids::{generate_tool_call_id, EntryId, WorkspaceId};
use crate::domain::time::Timestamp;
use crate::domain::tools::Tool;
use crate::error::Error;
use crate::store::{ConversationRecord, StoreError, TurnWrite};
use crate::AppState;
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Everything a run needs, loaded and validated before the first byte is sent.
#[derive(Debug, Clone)]
pub struct TurnPlan {
    pub ws: WorkspaceId,
    /// The conversation as it will be stored (id, settings); `head` is set by the run.
    pub conversation: ConversationRecord,
    /// Start and restart create the conversation; append moves its head.
    pub create: bool,
    /// `store: false` runs the turn and returns it without persisting anything.
    pub store: bool,
    pub expected_head: Option<EntryId>,
    /// The entry the turn hangs from and its depth (`None`: a new root).
    pub parent: Option<(EntryId, i64)>,
    /// The path from the root to `parent`.
    pub history: super::history::History,
    pub inputs: Vec<Entry>,
    pub model: String,
    pub agent_id: Option<String>,
    pub instructions: Option<String>,
    pub tools: Vec<Tool>,
    pub args: CompletionArgs,
    /// Calls to server-side tools the client allowed in this append: they run first.
    pub confirmed: Vec<FunctionCall>,
}

/// Events buffered between the run and a slow client before the run waits. The channel
/// allocates per queued event (tokio's preallocates 32 slots per channel, ~6 KiB per open
/// stream even when idle).
const CHANNEL_CAPACITY: usize = 64;

/// Starts the run in its own task and returns its events, for a streaming response.
pub fn spawn(state: &AppState, plan: TurnPlan) -> mpsc::Receiver<RunEvent> {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    start(state, plan, Some(tx), None);
    rx
}

/// Starts the run in its own task and returns the fold of its events, for a JSON
/// response: the same events, folded by the same code, handed over once at the end.
pub fn spawn_folded(state: &AppState, plan: TurnPlan) -> oneshot::Receiver<Fold> {
    let (tx, rx) = oneshot::channel();
    start(state, plan, None, Some(tx));
    rx
}

fn start(
    state: &AppState,
    plan: TurnPlan,
    events: Option<mpsc::Sender<RunEvent>>,
    folded: Option<oneshot::Sender<Fold>>,
) {
    let runs = state.runs.clone();
    let state = state.clone();
    // This future lives as long as the turn (for a stream: as long as it is open), so it
    // is kept small: `run` borrows the plan (moved in, it would be stored twice) and the
    // rarely taken paths inside it are boxed.
    let fut = async move {
        let mut plan = plan;
        let mut out = Emitter { tx: events, queued: None, fold: Fold::default() };
        run(&state, &mut plan, &mut out).await;
        if let Some((message, code)) = &out.fold.failure {
            tracing::warn!(conversation_id = %plan.conversation.id, code, message, "turn failed; nothing stored");
        }
        if let Some(folded) = folded {
            // A client that went away no longer waits for this; the turn is stored anyway.
            let _ = folded.send(out.fold);
        }
    };
    runs.spawn(fut);
}

/// Folds events into the turn's outputs and, when streaming, sends them to the client.
struct Emitter {
    tx: Option<mpsc::Sender<RunEvent>>,
    /// The event `flush` sends next.
    queued: Option<RunEvent>,
    fold: Fold,
}

impl Emitter {
    /// Folds `event` and hands it to the client; the future waits while the client's
    /// channel is full. The event waits in the emitter, not in the future: the run's
    /// future lives as long as its stream, and each call site would reserve room for a
    /// whole event in it.
    fn emit(&mut self, event: RunEvent) -> impl std::future::Future<Output = ()> + '_ {
        self.fold.apply(&event);
        if self.tx.is_some() {
            self.queued = Some(event);
        }
        self.flush()
    }

    async fn flush(&mut self) {
        let Some(tx) = &mut self.tx else { return };
        let sent = match futures::future::poll_fn(|cx| tx.poll_ready(cx)).await {
            Ok(()) => match self.queued.take() {
                Some(event) => tx.start_send(event),
                None => Ok(()),
            },
            Err(closed) => Err(closed),
        };
        if sent.is_err() {
            // The client disconnected: keep running so the turn is stored whole.
            self.tx = None;
            self.queued = None;
        }
    }

    async fn fail(&mut self, error: &Error) {
        let code = match error {
            Error::Upstream { status, .. } | Error::RunFailed { status, .. } => *status,
            Error::Conflict(_) => 409,
            Error::Invalid(_) => 422,
            _ => 500,
        };
        if code >= 500 {
            tracing::error!(error = ?error, "run failed");
        }
        self.emit(RunEvent::Failed { message: error.to_string(), code, created_at: Timestamp::now() }).await;
    }

    fn next_index(&self) -> u32 {
        self.fold.outputs.len() as u32
    }
}

/// A tool call being assembled from its fragments.
struct PendingCall {
    /// Decided when the name arrives: `Some(None)` for a client function,
    /// `Some(Some(requires_confirmation))` for a tool the server runs. Server calls are not
    /// streamed as they arrive: they become a `tool.execution` (or a pending
    /// `function.call`) when the answer ends.
    server: Option<Option<bool>>,
    output_index: Option<u32>,
    entry_id: EntryId,
    tool_call_id: Option<String>,
    name: Option<String>,
    /// Arguments that arrived before the name (only then can the first event be sent).
    buffered: String,
}

async fn run(state: &AppState, plan: &mut TurnPlan, out: &mut Emitter) {
    out.emit(RunEvent::Started { conversation_id: plan.conversation.id.clone(), created_at: Timestamp::now() }).await;
    let backend = state.models.backend(&plan.model);
    let toolbox = match Toolbox::of(&state.connectors, &plan.tools).await {
        Ok(toolbox) => toolbox,
        Err(error) => return out.fail(&error).await,
    };
    for call in &plan.confirmed {
        if let Err(error) =
            Box::pin(execute(&toolbox, plan, out, &call.name, &call.tool_call_id, &call.arguments)).await
        {
            return out.fail(&error).await;
        }
    }
    let mut usage = crate::domain::conversations::Usage::default();
    let mut rounds = 0;
    loop {
        if rounds >= state.limits.max_rounds {
            let message =
                format!("The turn needed more than {} model calls (PALAVER_MAX_ROUNDS).", state.limits.max_rounds);
            out.fail(&Error::RunFailed { status: 500, message }).await;
            return;
        }
        rounds += 1;
        let context =
            context::messages(plan.instructions.as_deref(), &plan.history, plan.inputs.iter().chain(&out.fold.outputs));
        let stored = || context::history_messages(&plan.history);
        let request = ChatRequest {
            model: plan.model.clone(),
            messages: context.messages,
            stored: context.stored_at.map(|at| StoredMessages { at, build: &stored, json: plan.history.chat_json() }),
            tools: Cow::Borrowed(&toolbox.chat),
            args: Cow::Borrowed(&plan.args),
        };
        let stream = match backend.chat_stream(request).await {
            Ok(stream) => stream,
            Err(error) => return out.fail(&error).await,
        };
        match consume(stream, plan, &toolbox, out).await {
            Ok(round) => {
                usage.add(round.usage);
                if !round.needs_another_round {
                    break;
                }
            }
            Err(error) => return out.fail(&error).await,
        }
    }
    if plan.store {
        // Boxed: the run's future (alive for every open stream) need not reserve room for
        // the commit's state while the model streams.
        if let Err(error) = Box::pin(commit(state, plan, &out.fold.outputs)).await {
            return out.fail(&error).await;
        }
    }
    out.emit(RunEvent::Done { usage: usage.into(), created_at: Timestamp::now() }).await;
}

struct RoundOutcome {
    usage: crate::domain::conversations::Usage,
    /// Set when the round's tool calls ran on the server and the model must see their
    /// results. Calls to client functions end the turn instead: the client answers them
    /// with `function.result` entries in its next append.
    needs_another_round: bool,
}

/// Streams one model answer out as events: text as `message.output.delta`s of one entry,
/// each client function call as `function.call.delta`s of its own entry; calls to server
/// tools run (or wait for a confirmation) once the answer is complete.
async fn consume(
    mut stream: DeltaStream,
    plan: &TurnPlan,
    toolbox: &Toolbox<'_>,
    out: &mut Emitter,
) -> Result<RoundOutcome, Error> {
    let mut message: Option<(EntryId, u32, Timestamp)> = None;
    let mut calls: BTreeMap<u32, PendingCall> = BTreeMap::new();
    let mut usage = crate::domain::conversations::Usage::default();
    while let Some(delta) = stream.next().await {
        match delta? {
            ChatDelta::Text(text) => {
                let (id, output_index, created_at) = match &message {
                    Some(m) => m.clone(),
                    None => {
                        let m = (EntryId::generate("msg_"), out.next_index(), Timestamp::now());
                        message = Some(m.clone());
                        m
                    }
                };
                out.emit(RunEvent::MessageDelta {
                    id,
                    output_index,
                    content_index: 0,
                    created_at,
                    model: Some(plan.model.clone()),
                    agent_id: plan.agent_id.clone(),
                    role: "assistant",
                    content: text,
                })
                .await;
            }
            ChatDelta::ToolCall(fragment) => {
                let call = calls.entry(fragment.index).or_insert_with(|| PendingCall {
                    server: None,
                    output_index: None,
                    entry_id: EntryId::generate("fc_"),
                    tool_call_id: None,
                    name: None,
                    buffered: String::new(),
                });
                if call.tool_call_id.is_none() {
                    call.tool_call_id = fragment.id;
                }
                if call.name.is_none() {
                    call.name = fragment.name;
                }
                call.buffered.push_str(&fragment.arguments);
                // The first event of a call needs its name; until then, fragments wait.
                if let Some(name) = call.name.clone() {
                    let server = *call
                        .server
                        .get_or_insert_with(|| toolbox.server_tool(&name).map(|tool| tool.requires_confirmation));
                    if server.is_some() {
                        continue;
                    }
                    let first = call.output_index.is_none();
                    if first {
                        close_message(&mut message, out).await;
                        call.output_index = Some(out.next_index());
                        call.tool_call_id.get_or_insert_with(generate_tool_call_id);
                    }
                    if first || !call.buffered.is_empty() {
                        let arguments = std::mem::take(&mut call.buffered);
                        out.emit(function_delta(plan, call, name, arguments, None)).await;
                    }
                }
            }
            ChatDelta::Usage(u) => usage = u,
        }
    }
    close_message(&mut message, out).await;
    // A call whose name never came cannot be answered by the client.
    if let Some(call) = calls.values().find(|c| c.name.is_none()) {
        let id = call.tool_call_id.clone().unwrap_or_default();
        return Err(Error::Upstream {
            status: 502,
            message: format!("the model sent tool call `{id}` without a name"),
        });
    }
    // Server-side calls, in the order the model made them: pending confirmations end the
    // turn like client calls do; the others run now, and the model reads their answers in
    // another round unless the client has calls of its own to answer first.
    let (mut client_calls, mut pending, mut executed) = (false, false, false);
    for call in calls.values_mut() {
        let name = call.name.clone().unwrap_or_default();
        match call.server.flatten() {
            None => client_calls = true,
            Some(true) => {
                pending = true;
                call.output_index = Some(out.next_index());
                let tool_call_id = call.tool_call_id.get_or_insert_with(generate_tool_call_id).clone();
                let arguments = std::mem::take(&mut call.buffered);
                out.emit(function_delta(plan, call, name, arguments, Some("pending"))).await;
                tracing::info!(tool_call_id, "tool call waits for the client's confirmation");
            }
            Some(false) => {
                executed = true;
                let tool_call_id = call.tool_call_id.get_or_insert_with(generate_tool_call_id).clone();
                Box::pin(execute(toolbox, plan, out, &name, &tool_call_id, &call.buffered)).await?;
            }
        }
    }
    Ok(RoundOutcome { usage, needs_another_round: executed && !client_calls && !pending })
}

/// Runs one call of a server-side tool as a `tool.execution` entry.
async fn execute(
    toolbox: &Toolbox<'_>,
    plan: &TurnPlan,
    out: &mut Emitter,
    name: &str,
    tool_call_id: &str,
    arguments: &str,
) -> Result<(), Error> {
    let id = EntryId::generate("tool_exec_");
    let output_index = out.next_index();
    out.emit(RunEvent::ToolStarted {
        id: id.clone(),
        output_index,
        created_at: Timestamp::now(),
        name: name.to_owned(),
        arguments: arguments.to_owned(),
        model: Some(plan.model.clone()),
        agent_id: plan.agent_id.clone(),
    })
    .await;
    let info = match toolbox.server_tool(name) {
        Some(tool) => tool.run(tool_call_id, arguments).await?,
        // The agent changed between the call and its confirmation.
        None => execution_info(tool_call_id, &format!("The tool `{name}` is no longer available."), true),
    };
    out.emit(RunEvent::ToolDone { id, output_index, created_at: Timestamp::now(), name: name.to_owned(), info }).await;
    out.emit(RunEvent::EntryDone { output_index, completed_at: Timestamp::now() }).await;
    Ok(())
}

fn function_delta(
    plan: &TurnPlan,
    call: &PendingCall,
    name: String,
    arguments: String,
    confirmation_status: Option<&str>,
) -> RunEvent {
    RunEvent::FunctionCallDelta {
        id: call.entry_id.clone(),
        output_index: call.output_index.unwrap_or_default(),
        created_at: Timestamp::now(),
        name,
        tool_call_id: call.tool_call_id.clone().unwrap_or_default(),
        arguments,
        model: Some(plan.model.clone()),
        agent_id: plan.agent_id.clone(),
        confirmation_status: confirmation_status.map(str::to_owned),
    }
}

/// Marks the message being streamed as complete.
async fn close_message(message: &mut Option<(EntryId, u32, Timestamp)>, out: &mut Emitter) {
    if let Some((_, output_index, _)) = message.take() {
        out.emit(RunEvent::EntryDone { output_index, completed_at: Timestamp::now() }).await;
    }
}

/// Stores inputs and outputs as one turn, moving the head if nobody else did.
async fn commit(state: &AppState, plan: &mut TurnPlan, outputs: &[Entry]) -> Result<(), Error> {
    let entries: Vec<Entry> = plan.inputs.iter().chain(outputs).cloned().collect();
    let mut conversation = plan.conversation.clone();
    conversation.head = entries.last().map(|e| e.id().clone()).or_else(|| plan.parent.as_ref().map(|p| p.0.clone()));
    conversation.updated_at = Timestamp::now();
    let turn = TurnWrite {
        conversation,
        create: plan.create,
        expected_head: plan.expected_head.clone(),
        parent: plan.parent.clone(),
        entries,
    };
    match state.store.commit_turn(&plan.ws, &turn).await {
        Ok(()) => {
            tracing::info!(conversation_id = %plan.conversation.id, entries = turn.entries.len(), "turn committed");
            if let Some(head) = &turn.conversation.head {
                // The run is over: the plan's history becomes the new head's.
                let history = std::mem::take(&mut plan.history);
                state.histories.advance(&plan.ws, plan.expected_head.as_ref(), head, history, turn.entries);
            }
            Ok(())
        }
        Err(StoreError::Conflict) => Err(Error::Conflict(format!(
            "Conversation `{}` moved on while this turn ran; nothing was stored. Retry the request.",
            plan.conversation.id
        ))),
        Err(other) => Err(other.into()),
    }
}
