//! The run loop (DESIGN decisions 1 and 2): one loop for start, append and restart that
//! calls the model, turns its deltas into typed events, and stores the whole turn in one
//! transaction when it ends. A failed run stores nothing.
//!
//! The run owns a task and feeds a bounded channel. A client that goes away stops
//! receiving, not the run: the turn still commits when it ends.

use super::calls::{CallAssembler, CallParts};
use super::citations::{MarkerScanner, Piece, Sources};
use super::context;
use super::fold::Fold;
use super::round::ModelRound;
use super::streams::RunLog;
use super::tools::Toolbox;
use super::Engine;
use crate::backends::chat::{Caller, ChatDelta, ChatRequest, CitationStyle, DeltaStream, ModelBackend, StoredMessages};
use crate::connectors::{CallContext, ProducedFile, ToolOutput};
use crate::domain::completion::CompletionArgs;
use crate::domain::conversations::HandoffExecution;
use crate::domain::entries::{Entry, FunctionCall};
use crate::domain::events::{DeltaContent, RunEvent};
use crate::domain::ids::{generate_tool_call_id, ConversationId, EntryId, WorkspaceId};
use crate::domain::time::Timestamp;
use crate::domain::tools::Tool;
use crate::error::{Code, Error};
use crate::store::{ConversationRecord, StoreError, TurnWrite};
use crate::telemetry::{self, traces};
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

/// Everything a run needs, loaded and validated before the first byte is sent.
#[derive(Debug, Clone)]
pub struct TurnPlan {
    pub ws: WorkspaceId,
    /// The conversation as it will be stored (id, settings); `head` is set by the run.
    /// Boxed: only the commit reads more than its id, and the plan lives inside the run's
    /// future for as long as a stream is open (see `start`).
    pub conversation: Box<ConversationRecord>,
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
    /// The settings the turn starts with: the agent in force, or the conversation's own.
    pub settings: Settings,
    /// The agents the turn may hand off to, directly or through one another, resolved
    /// once per turn (active versions); agents that no longer exist are not among them.
    pub targets: Vec<Settings>,
    /// `client`: the turn stops at a handoff, which the client's next append carries out.
    pub handoff_execution: HandoffExecution,
    /// Calls to server-side tools the client allowed in this append: they run first.
    pub confirmed: Vec<FunctionCall>,
}

/// The settings a model round runs with: the agent answering (its model, instructions,
/// tools and arguments), or a model conversation's own. One value, so a turn can swap it
/// between rounds; every event of a round takes its `agent_id` and `model` from it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub model: String,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    /// The agent's description: what a handoff offer tells the model about it.
    pub description: Option<String>,
    pub instructions: Option<String>,
    pub tools: Vec<Tool>,
    pub args: CompletionArgs,
    /// The agents this one may hand off to (ids, as configured).
    pub handoffs: Vec<String>,
}

/// The settings in force for a round, with what they resolve to: the backend serving the
/// model and the toolbox offered (which borrows the settings' tool definitions).
struct InForce<'a> {
    settings: &'a Settings,
    backend: Arc<dyn ModelBackend>,
    toolbox: Toolbox<'a>,
}

impl<'a> InForce<'a> {
    async fn resolve(engine: &Engine, settings: &'a Settings, targets: &'a [Settings]) -> Result<Self, Error> {
        let toolbox = Toolbox::of(&engine.connectors, settings, targets).await?;
        Ok(InForce { settings, backend: engine.models.backend(&settings.model), toolbox })
    }

    fn model(&self) -> Option<String> {
        Some(self.settings.model.clone())
    }

    fn agent_id(&self) -> Option<String> {
        self.settings.agent_id.clone()
    }
}

/// Who answers a call the model made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// A client `function`: the turn stops with a `function.call` the client answers.
    ClientFunction,
    /// A tool the server runs now, recorded as a `tool.execution`.
    ServerTool,
    /// A server tool listed in `requires_confirmation`: the turn stops with a pending
    /// `function.call` until the client allows or denies it.
    NeedsConfirmation,
    /// `handoff_to_<agent_id>`: the conversation goes to `TurnPlan::targets[i]`.
    Handoff(usize),
}

/// How a model round ends the turn's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoundOutcome {
    /// The model answered without calls: the turn is complete.
    Finished,
    /// Only server tools were called and have run: the model reads their answers next.
    AnotherRound,
    /// A client function call or a confirmation is open: the client answers it in its
    /// next append (server calls of the same answer have run and are stored with it).
    WaitingForClient,
    /// The model handed the conversation to `TurnPlan::targets[i]`. A handoff supersedes
    /// the other calls of its answer: none of them runs or is recorded (none is left
    /// open), and the target answers the conversation as it stands.
    HandOff(usize),
}

impl RoundOutcome {
    fn after(calls: impl IntoIterator<Item = CallKind>) -> Self {
        let (mut client, mut server) = (false, false);
        for kind in calls {
            match kind {
                CallKind::ClientFunction | CallKind::NeedsConfirmation => client = true,
                CallKind::ServerTool => server = true,
                // The first handoff of an answer wins.
                CallKind::Handoff(target) => return RoundOutcome::HandOff(target),
            }
        }
        match (client, server) {
            (true, _) => RoundOutcome::WaitingForClient,
            (false, true) => RoundOutcome::AnotherRound,
            (false, false) => RoundOutcome::Finished,
        }
    }
}

/// Events buffered between the run and a slow client before the run waits. The channel
/// allocates per queued event (tokio's preallocates 32 slots per channel, ~6 KiB per open
/// stream even when idle).
const CHANNEL_CAPACITY: usize = 64;

/// Starts the run in its own task and returns its events, for a streaming response.
/// Its events are kept for resuming (`streams`).
pub fn spawn(engine: &Arc<Engine>, plan: TurnPlan) -> mpsc::Receiver<RunEvent> {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let log = engine.streams.open(&plan.ws, &plan.conversation.id);
    start(engine, plan, Some((tx, log)), None);
    rx
}

/// Starts the run in its own task and returns the fold of its events, for a JSON
/// response: the same events, folded by the same code, handed over once at the end.
pub fn spawn_folded(engine: &Arc<Engine>, plan: TurnPlan) -> oneshot::Receiver<Fold> {
    let (tx, rx) = oneshot::channel();
    start(engine, plan, None, Some(tx));
    rx
}

fn start(
    engine: &Arc<Engine>,
    plan: TurnPlan,
    events: Option<(mpsc::Sender<RunEvent>, Arc<RunLog>)>,
    folded: Option<oneshot::Sender<Fold>>,
) {
    let runs = engine.runs.clone();
    let engine = engine.clone();
    let turn = traces::turn_span(plan.conversation.id.as_str(), plan.settings.agent_id.as_deref());
    // Disabled (no traces, and the log above DEBUG), the run's log lines still belong to its
    // request (request id): the run outlives the request when streamed.
    let span = if turn.is_disabled() { tracing::Span::current() } else { turn.clone() };
    // This future lives as long as the turn (for a stream: as long as it is open), so it
    // is kept small: `run` borrows the plan (moved in, it would be stored twice) and the
    // rarely taken paths inside it are boxed.
    let fut = async move {
        let mut plan = plan;
        let started = Instant::now();
        let (tx, log) = events.unzip();
        let mut out = Emitter { tx, log, queued: None, fold: Fold::default(), started, first_delta: false };
        let rounds = run(&engine, &mut plan, &mut out).await;
        if let Some(log) = out.log.take() {
            log.finish();
        }
        let outcome = match &out.fold.failure {
            Some((message, code)) => {
                let status = code.status();
                tracing::warn!(conversation_id = %plan.conversation.id, code = status, message, "turn failed; nothing stored");
                code.name()
            }
            None => "completed",
        };
        telemetry::turn(outcome, rounds, started.elapsed());
        traces::turn_ended(&turn, outcome, rounds);
        if let Some(folded) = folded {
            // A client that went away no longer waits for this; the turn is stored anyway.
            let _ = folded.send(std::mem::take(&mut out.fold));
        }
    };
    runs.spawn(tracing::Instrument::instrument(fut, span));
}

/// Folds events into the turn's outputs and, when streaming, sends them to the client.
struct Emitter {
    tx: Option<mpsc::Sender<RunEvent>>,
    /// Keeps a streamed run's events for a client that resumes it.
    log: Option<Arc<RunLog>>,
    /// The event `flush` sends next.
    queued: Option<RunEvent>,
    fold: Fold,
    /// When the run started, and whether its first delta went out (time to first delta).
    started: Instant,
    first_delta: bool,
}

/// A run that panicked (or whose task was dropped) still ends its log: followers of a
/// resumed stream stop, and the run's end is shared with other replicas.
impl Drop for Emitter {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.finish();
        }
    }
}

impl Emitter {
    /// Folds `event` and hands it to the client; the future waits while the client's
    /// channel is full. The event waits in the emitter, not in the future: the run's
    /// future lives as long as its stream, and each call site would reserve room for a
    /// whole event in it.
    fn emit(&mut self, event: RunEvent) -> impl std::future::Future<Output = ()> + '_ {
        if !self.first_delta && matches!(event, RunEvent::MessageDelta { .. } | RunEvent::FunctionCallDelta { .. }) {
            self.first_delta = true;
            telemetry::first_delta(self.started.elapsed());
        }
        self.fold.apply(&event);
        if let (Some(log), Some(_)) = (&self.log, event.name()) {
            log.push(&event);
        }
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
        let code = error.code();
        if code.status() >= 500 {
            tracing::error!(error = ?error, "run failed");
        }
        let message = error.to_string();
        self.emit(RunEvent::Failed { message, code: code.status(), created_at: Timestamp::now(), error: code }).await;
    }

    fn next_index(&self) -> u32 {
        self.fold.outputs.len() as u32
    }
}

/// What the turn's server tools produced so far, for the rounds that follow.
struct ToolResults {
    ws: WorkspaceId,
    conversation_id: ConversationId,
    /// Sources the answers may cite, numbered across the turn.
    sources: Sources,
    /// Calls per tool (`usage.connectors`).
    calls: Map<String, Value>,
    /// Files the next message shows as `tool_file` chunks, with the tool that made each.
    files: Vec<(String, ProducedFile)>,
}

impl ToolResults {
    fn new(plan: &TurnPlan) -> Self {
        ToolResults {
            ws: plan.ws.clone(),
            conversation_id: plan.conversation.id.clone(),
            sources: Sources::default(),
            calls: Map::new(),
            files: Vec::new(),
        }
    }

    fn record(&mut self, tool: &str, usage_key: &str, output: &mut ToolOutput) {
        let count = self.calls.entry(usage_key.to_owned()).or_insert(Value::from(0));
        *count = Value::from(count.as_u64().unwrap_or(0) + 1);
        self.sources.add(tool, std::mem::take(&mut output.sources));
        self.files.extend(output.files.drain(..).map(|file| (tool.to_owned(), file)));
    }
}

/// The `tool_file` chunk showing a file a tool produced.
fn file_chunk(tool: &str, file: &ProducedFile) -> Value {
    serde_json::json!({
        "type": "tool_file",
        "tool": tool,
        "file_id": file.file_id,
        "file_name": file.file_name,
        "file_type": file.file_type,
    })
}

/// The message being streamed: its entry, and where its content stands.
struct OpenMessage {
    id: EntryId,
    output_index: u32,
    created_at: Timestamp,
    /// The chunk the next delta adds to (text deltas share one until a chunk comes).
    content_index: u32,
    /// What the last delta was: nothing yet, text, or a whole chunk.
    last: Option<bool>,
}

/// The text of one model answer on its way out: markers turn into citations when the
/// model cites with them and the turn has sources; the files of the tools that ran
/// before are shown at the message's end.
struct Speech {
    message: Option<OpenMessage>,
    markers: Option<MarkerScanner>,
    pieces: Vec<Piece>,
}

impl Speech {
    fn new(in_force: &InForce<'_>, results: &ToolResults) -> Self {
        let cites_with_markers = in_force.backend.citation_style() == CitationStyle::Markers;
        Speech {
            message: None,
            markers: (cites_with_markers && !results.sources.is_empty()).then(MarkerScanner::default),
            pieces: Vec::new(),
        }
    }

    async fn text(&mut self, text: String, in_force: &InForce<'_>, results: &ToolResults, out: &mut Emitter) {
        let Some(markers) = &mut self.markers else {
            return self.say(DeltaContent::Text(text), in_force, out).await;
        };
        markers.push(&text, results.sources.len(), &mut self.pieces);
        self.say_pieces(in_force, results, out).await;
    }

    async fn cite(&mut self, ids: Vec<u64>, in_force: &InForce<'_>, results: &ToolResults, out: &mut Emitter) {
        for id in ids {
            // A number naming no source of this turn is dropped: there is nothing to show.
            if let Some(chunk) = usize::try_from(id).ok().and_then(|n| results.sources.chunk(n)) {
                self.say(DeltaContent::Chunk(chunk), in_force, out).await;
            }
        }
    }

    async fn say_pieces(&mut self, in_force: &InForce<'_>, results: &ToolResults, out: &mut Emitter) {
        let pieces = std::mem::take(&mut self.pieces);
        for piece in pieces {
            let content = match piece {
                Piece::Text(text) => DeltaContent::Text(text),
                Piece::Cite(n) => match results.sources.chunk(n) {
                    Some(chunk) => DeltaContent::Chunk(chunk),
                    None => continue,
                },
            };
            self.say(content, in_force, out).await;
        }
    }

    /// Emits one delta of the message, opening it first if needed.
    async fn say(&mut self, content: DeltaContent, in_force: &InForce<'_>, out: &mut Emitter) {
        let message = self.message.get_or_insert_with(|| OpenMessage {
            id: EntryId::generate("msg_"),
            output_index: out.next_index(),
            created_at: Timestamp::now(),
            content_index: 0,
            last: None,
        });
        let chunk = matches!(content, DeltaContent::Chunk(_));
        if message.last.is_some_and(|last_was_chunk| last_was_chunk || chunk) {
            message.content_index += 1;
        }
        message.last = Some(chunk);
        out.emit(RunEvent::MessageDelta {
            id: message.id.clone(),
            output_index: message.output_index,
            content_index: message.content_index,
            created_at: message.created_at,
            model: in_force.model(),
            agent_id: in_force.agent_id(),
            role: "assistant",
            content,
        })
        .await;
    }

    /// Ends the message: held-back text goes out, the tools' files are shown, and the
    /// entry is complete. With `files_alone`, files with no message to join get their own.
    async fn close(&mut self, in_force: &InForce<'_>, results: &mut ToolResults, out: &mut Emitter, files_alone: bool) {
        if let Some(markers) = &mut self.markers {
            markers.finish(&mut self.pieces);
            self.say_pieces(in_force, results, out).await;
        }
        if self.message.is_some() || files_alone {
            for (tool, file) in std::mem::take(&mut results.files) {
                self.say(DeltaContent::Chunk(file_chunk(&tool, &file)), in_force, out).await;
            }
        }
        if let Some(message) = self.message.take() {
            out.emit(RunEvent::EntryDone { output_index: message.output_index, completed_at: Timestamp::now() }).await;
        }
    }
}

/// What the run tracks beside each call it assembles.
struct RoundCall {
    /// Decided when the name arrives. Server calls are not streamed as they arrive: they
    /// become a `tool.execution` (or a pending `function.call`) when the answer ends.
    kind: Option<CallKind>,
    output_index: Option<u32>,
    entry_id: EntryId,
}

type Call = CallParts<RoundCall>;

/// Runs the turn; returns how many model rounds it made.
async fn run(engine: &Engine, plan: &mut TurnPlan, out: &mut Emitter) -> u32 {
    let mut rounds = 0;
    run_rounds(engine, plan, out, &mut rounds).await;
    rounds
}

async fn run_rounds(engine: &Engine, plan: &mut TurnPlan, out: &mut Emitter, rounds: &mut u32) {
    out.emit(RunEvent::Started { conversation_id: plan.conversation.id.clone(), created_at: Timestamp::now() }).await;
    let mut in_force = match InForce::resolve(engine, &plan.settings, &plan.targets).await {
        Ok(in_force) => in_force,
        Err(error) => return out.fail(&error).await,
    };
    // Boxed: only tool rounds use it, and the run's future lives as long as its stream.
    let mut results = Box::new(ToolResults::new(plan));
    for call in &plan.confirmed {
        let execution = execute(&in_force, out, &mut results, &call.name, &call.tool_call_id, &call.arguments);
        if let Err(error) = Box::pin(execution).await {
            return out.fail(&error).await;
        }
    }
    let mut usage = crate::domain::conversations::Usage::default();
    let mut handoffs = 0;
    let mut finished = false;
    loop {
        if *rounds >= engine.limits.max_rounds {
            let message =
                format!("The turn needed more than {} model calls (PALAVER_MAX_ROUNDS).", engine.limits.max_rounds);
            return out.fail(&Error::RunFailed { code: Code::TurnLimit, message }).await;
        }
        *rounds += 1;
        let settings = in_force.settings;
        let context = context::messages(
            settings.instructions.as_deref(),
            &plan.history,
            plan.inputs.iter().chain(&out.fold.outputs),
        );
        let stored = || context::history_messages(&plan.history);
        let request = ChatRequest {
            model: settings.model.clone(),
            messages: context.messages,
            stored: context.stored_at.map(|at| StoredMessages { at, build: &stored, json: plan.history.chat_json() }),
            tools: Cow::Borrowed(&in_force.toolbox.chat),
            args: Cow::Borrowed(&settings.args),
            // A streamed run's log keeps its deltas for followers even after its client left.
            stream: out.log.is_some(),
            caller: Caller {
                workspace: Some(Cow::Borrowed(plan.ws.as_str())),
                agent_id: settings.agent_id.as_deref().map(Cow::Borrowed),
                agent_name: settings.agent_name.as_deref().map(Cow::Borrowed),
                round: *rounds,
            },
        };
        let round = ModelRound::start(&settings.model, &*in_force.backend, *rounds);
        let (round, stream) = match round.call(&*in_force.backend, request).await {
            Ok(called) => called,
            Err(error) => return out.fail(&error).await,
        };
        match consume(stream, &in_force, out, &mut results, round).await {
            Ok(round) => {
                usage.add(round.usage);
                match round.outcome {
                    RoundOutcome::AnotherRound => continue,
                    RoundOutcome::Finished => {
                        finished = true;
                        break;
                    }
                    RoundOutcome::WaitingForClient => break,
                    RoundOutcome::HandOff(_) if plan.handoff_execution == HandoffExecution::Client => break,
                    RoundOutcome::HandOff(target) => {
                        handoffs += 1;
                        if handoffs > engine.limits.max_handoffs {
                            let message = format!(
                                "The turn handed off more than {} times (PALAVER_MAX_HANDOFFS).",
                                engine.limits.max_handoffs
                            );
                            return out.fail(&Error::RunFailed { code: Code::TurnLimit, message }).await;
                        }
                        in_force = match InForce::resolve(engine, &plan.targets[target], &plan.targets).await {
                            Ok(next) => next,
                            Err(error) => return out.fail(&error).await,
                        };
                    }
                }
            }
            Err(error) => return out.fail(&error).await,
        }
    }
    if finished && !results.files.is_empty() {
        // The model said nothing after the tools that made them: the files still show.
        Speech::new(&in_force, &results).close(&in_force, &mut results, out, true).await;
    }
    drop(in_force);
    if plan.store {
        // Boxed: the run's future (alive for every open stream) need not reserve room for
        // the commit's state while the model streams.
        if let Err(error) = Box::pin(commit(engine, plan, &out.fold.outputs)).await {
            return out.fail(&error).await;
        }
    }
    let mut usage: crate::domain::conversations::UsageInfo = usage.into();
    if !results.calls.is_empty() {
        usage.connectors = Some(std::mem::take(&mut results.calls));
    }
    out.emit(RunEvent::Done { usage, created_at: Timestamp::now() }).await;
}

struct Round {
    usage: crate::domain::conversations::Usage,
    outcome: RoundOutcome,
}

/// Streams one model answer out as events: text as `message.output.delta`s of one entry,
/// each client function call as `function.call.delta`s of its own entry; calls to server
/// tools run (or wait for a confirmation) once the answer is complete. The round's span
/// covers the answer, not the tools it calls.
async fn consume(
    mut stream: DeltaStream,
    in_force: &InForce<'_>,
    out: &mut Emitter,
    results: &mut ToolResults,
    mut round: ModelRound,
) -> Result<Round, Error> {
    let mut speech = Speech::new(in_force, results);
    let mut calls = CallAssembler::<RoundCall>::default();
    let span = round.span().clone();
    let streamed = async {
        while let Some(delta) = stream.next().await {
            match delta? {
                ChatDelta::Text(text) => speech.text(text, in_force, results, out).await,
                ChatDelta::Reference(ids) => speech.cite(ids, in_force, results, out).await,
                ChatDelta::ToolCall(fragment) => {
                    let call = calls.push(fragment, || RoundCall {
                        kind: None,
                        output_index: None,
                        entry_id: EntryId::generate("fc_"),
                    });
                    // The first event of a call needs its name; until then, fragments wait.
                    let Some(name) = call.name.clone() else { continue };
                    let kind = *call.state.kind.get_or_insert_with(|| in_force.toolbox.call_kind(&name));
                    // Client calls stream as they come, unless a handoff later in the same
                    // answer could supersede them: then they wait for the answer's end.
                    if kind != CallKind::ClientFunction || in_force.toolbox.offers_handoffs() {
                        continue;
                    }
                    let first = call.state.output_index.is_none();
                    if first {
                        speech.close(in_force, results, out, false).await;
                        call.state.output_index = Some(out.next_index());
                        call.id.get_or_insert_with(generate_tool_call_id);
                    }
                    if first || !call.arguments.is_empty() {
                        let arguments = call.take_arguments();
                        out.emit(function_delta(in_force, call, name, arguments, None)).await;
                    }
                }
                delta @ (ChatDelta::Usage(_) | ChatDelta::Finish { .. }) => round.note(delta),
            }
        }
        Ok(())
    };
    let streamed: Result<(), Error> = tracing::Instrument::instrument(streamed, span).await;
    let usage = round.end(streamed.as_ref().err()).unwrap_or_default();
    streamed?;
    speech.close(in_force, results, out, false).await;
    if let Some(call) = calls.nameless() {
        let id = call.id.clone().unwrap_or_default();
        return Err(Error::upstream(502, format!("the model sent tool call `{id}` without a name")));
    }
    let kinds: Vec<CallKind> = calls.iter_mut().map(|c| c.state.kind.unwrap_or(CallKind::ClientFunction)).collect();
    let outcome = RoundOutcome::after(kinds.iter().copied());
    if let RoundOutcome::HandOff(target) = outcome {
        Box::pin(hand_off(in_force, in_force.toolbox.target(target), out)).await;
        return Ok(Round { usage, outcome });
    }
    // The other calls, in the order the model made them: deferred client calls go out now;
    // pending confirmations end the turn like client calls do; server tools run now, and
    // the model reads their answers in another round unless the client has calls of its
    // own to answer first.
    for call in calls.iter_mut() {
        let name = call.name.clone().unwrap_or_default();
        match call.state.kind.unwrap_or(CallKind::ClientFunction) {
            CallKind::ClientFunction if call.state.output_index.is_none() => {
                call.state.output_index = Some(out.next_index());
                call.id.get_or_insert_with(generate_tool_call_id);
                let arguments = call.take_arguments();
                out.emit(function_delta(in_force, call, name, arguments, None)).await;
            }
            CallKind::ClientFunction | CallKind::Handoff(_) => {}
            CallKind::NeedsConfirmation => {
                call.state.output_index = Some(out.next_index());
                let tool_call_id = call.id.get_or_insert_with(generate_tool_call_id).clone();
                let arguments = call.take_arguments();
                out.emit(function_delta(in_force, call, name, arguments, Some("pending"))).await;
                tracing::info!(tool_call_id, "tool call waits for the client's confirmation");
            }
            CallKind::ServerTool => {
                let tool_call_id = call.id.get_or_insert_with(generate_tool_call_id).clone();
                Box::pin(execute(in_force, out, results, &name, &tool_call_id, &call.arguments)).await?;
            }
        }
    }
    Ok(Round { usage, outcome })
}

/// Records an `agent.handoff` entry from the agent in force to `next`.
async fn hand_off(in_force: &InForce<'_>, next: &Settings, out: &mut Emitter) {
    let id = EntryId::generate("handoff_");
    let output_index = out.next_index();
    let (previous_agent_id, previous_agent_name) = agent_of(in_force.settings);
    out.emit(RunEvent::HandoffStarted {
        id: id.clone(),
        output_index,
        created_at: Timestamp::now(),
        previous_agent_id,
        previous_agent_name,
    })
    .await;
    let (next_agent_id, next_agent_name) = agent_of(next);
    tracing::info!(from = %in_force.settings.agent_id.as_deref().unwrap_or_default(), to = %next_agent_id, "handoff");
    out.emit(RunEvent::HandoffDone { id, output_index, created_at: Timestamp::now(), next_agent_id, next_agent_name })
        .await;
    out.emit(RunEvent::EntryDone { output_index, completed_at: Timestamp::now() }).await;
}

/// An agent's id and name as a handoff entry names it (handoffs only ever involve agents).
fn agent_of(settings: &Settings) -> (String, String) {
    (settings.agent_id.clone().unwrap_or_default(), settings.agent_name.clone().unwrap_or_default())
}

/// Runs one call of a server-side tool as a `tool.execution` entry.
async fn execute(
    in_force: &InForce<'_>,
    out: &mut Emitter,
    results: &mut ToolResults,
    name: &str,
    tool_call_id: &str,
    arguments: &str,
) -> Result<(), Error> {
    let id = EntryId::generate("tool_exec_");
    let output_index = out.next_index();
    let tool = in_force.toolbox.server_tool(name);
    let entry_name = tool.map_or(name, |t| t.entry_name.as_str()).to_owned();
    out.emit(RunEvent::ToolStarted {
        id: id.clone(),
        output_index,
        created_at: Timestamp::now(),
        name: entry_name.clone(),
        arguments: arguments.to_owned(),
        model: in_force.model(),
        agent_id: in_force.agent_id(),
    })
    .await;
    let started = Instant::now();
    let span = traces::tool_span(&entry_name, tool_call_id);
    let mut output = match tool {
        Some(tool) => {
            let context = CallContext {
                ws: &results.ws,
                conversation_id: &results.conversation_id,
                first_source: results.sources.len(),
                cite_with_markers: in_force.backend.citation_style() == CitationStyle::Markers,
                calls_before: results.calls.get(&tool.usage_key).and_then(Value::as_u64).unwrap_or(0),
            };
            let output = tracing::Instrument::instrument(tool.run(&context, arguments), span.clone()).await;
            let mut output = output.inspect_err(|_| {
                telemetry::tool_execution(name, "failed", started.elapsed());
                traces::tool_ended(&span, "failed");
            })?;
            results.record(&entry_name, &tool.usage_key, &mut output);
            output
        }
        // The agent changed between the call and its confirmation.
        None => ToolOutput::error(format!("The tool `{name}` is no longer available.")),
    };
    let outcome = if output.is_error { "error" } else { "ok" };
    telemetry::tool_execution(&entry_name, outcome, started.elapsed());
    traces::tool_ended(&span, outcome);
    drop(span);
    if entry_name != name {
        output.info.insert("function".to_owned(), Value::from(name));
    }
    let info = output.execution_info(tool_call_id);
    out.emit(RunEvent::ToolDone { id, output_index, created_at: Timestamp::now(), name: entry_name, info }).await;
    out.emit(RunEvent::EntryDone { output_index, completed_at: Timestamp::now() }).await;
    Ok(())
}

fn function_delta(
    in_force: &InForce<'_>,
    call: &Call,
    name: String,
    arguments: String,
    confirmation_status: Option<&str>,
) -> RunEvent {
    RunEvent::FunctionCallDelta {
        id: call.state.entry_id.clone(),
        output_index: call.state.output_index.unwrap_or_default(),
        created_at: Timestamp::now(),
        name,
        tool_call_id: call.id.clone().unwrap_or_default(),
        arguments,
        model: in_force.model(),
        agent_id: in_force.agent_id(),
        confirmation_status: confirmation_status.map(str::to_owned),
    }
}

/// Stores inputs and outputs as one turn, moving the head if nobody else did.
async fn commit(engine: &Engine, plan: &mut TurnPlan, outputs: &[Entry]) -> Result<(), Error> {
    let entries: Vec<Entry> = plan.inputs.iter().chain(outputs).cloned().collect();
    let mut conversation = ConversationRecord::clone(&plan.conversation);
    conversation.head = entries.last().map(|e| e.id().clone()).or_else(|| plan.parent.as_ref().map(|p| p.0.clone()));
    conversation.updated_at = Timestamp::now();
    let turn = TurnWrite {
        conversation,
        create: plan.create,
        expected_head: plan.expected_head.clone(),
        parent: plan.parent.clone(),
        entries,
        // This turn is one of the tracked runs.
        alone: engine.runs.len() <= 1,
    };
    let committed =
        telemetry::store_operation("commit_turn", engine.store.system(), engine.store.commit_turn(&plan.ws, &turn))
            .await;
    match committed {
        Ok(()) => {
            tracing::info!(conversation_id = %plan.conversation.id, entries = turn.entries.len(), "turn committed");
            if let Some(head) = &turn.conversation.head {
                // The run is over: the plan's history becomes the new head's.
                let history = std::mem::take(&mut plan.history);
                engine.histories.advance(&plan.ws, plan.expected_head.as_ref(), head, history, turn.entries);
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

#[cfg(test)]
mod tests {
    use super::*;
    use CallKind::*;

    #[tokio::test]
    async fn a_run_that_ends_without_finishing_still_ends_its_log() {
        use futures::StreamExt;
        use std::time::Duration;
        let logs = crate::engine::streams::RunLogs::new(Duration::from_secs(60), None);
        let log = logs.open(&WorkspaceId::default_workspace(), &ConversationId("conv_1".into()));
        let out = Emitter {
            tx: None,
            log: Some(log.clone()),
            queued: None,
            fold: Fold::default(),
            started: Instant::now(),
            first_delta: false,
        };

        drop(out);

        let followed = tokio::time::timeout(Duration::from_secs(5), log.follow(None).count()).await;
        assert_eq!(followed, Ok(0), "a follower of the log stops");
    }

    #[test]
    fn a_file_a_tool_made_shows_as_a_documented_tool_file_chunk() {
        let file = ProducedFile { file_id: "f1".into(), file_name: "plot".into(), file_type: "png".into() };

        let chunk = file_chunk("code_interpreter", &file);

        let documented: crate::domain::chunks::ToolFileChunk = serde_json::from_value(chunk).unwrap();
        assert_eq!((documented.tool.as_str(), documented.file_id.as_str()), ("code_interpreter", "f1"));
    }

    #[test]
    fn a_round_without_calls_finishes_the_turn() {
        assert_eq!(RoundOutcome::after([]), RoundOutcome::Finished);
    }

    #[test]
    fn server_tools_alone_send_their_answers_to_the_model_in_another_round() {
        assert_eq!(RoundOutcome::after([ServerTool, ServerTool]), RoundOutcome::AnotherRound);
    }

    #[test]
    fn any_call_the_client_must_answer_stops_the_turn_even_beside_server_tools() {
        assert_eq!(RoundOutcome::after([ServerTool, ClientFunction]), RoundOutcome::WaitingForClient);
        assert_eq!(RoundOutcome::after([NeedsConfirmation, ServerTool]), RoundOutcome::WaitingForClient);
        assert_eq!(RoundOutcome::after([ClientFunction]), RoundOutcome::WaitingForClient);
    }

    #[test]
    fn the_first_handoff_of_an_answer_supersedes_every_other_call() {
        assert_eq!(RoundOutcome::after([ClientFunction, Handoff(2), ServerTool, Handoff(0)]), RoundOutcome::HandOff(2));
        assert_eq!(RoundOutcome::after([NeedsConfirmation, Handoff(1)]), RoundOutcome::HandOff(1));
    }
}
