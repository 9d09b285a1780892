//! The rules of palaver, written once for every transport and store: agent versions and
//! aliases, conversations as entry trees, and the run loop that calls the model. Knows
//! nothing about HTTP or SQL.

pub mod agents;
pub mod calls;
pub mod citations;
pub mod completions;
pub mod context;
pub mod conversations;
pub mod files;
pub mod fold;
pub mod history;
pub mod idempotency;
pub mod mock;
pub mod round;
pub mod run;
pub mod streams;
pub mod tools;

use crate::backends::ModelRouter;
use crate::connectors::Connectors;
use crate::domain::models::ModelCard;
use crate::error::Result;
use crate::store::Store;
use std::sync::Arc;
use tokio_util::task::TaskTracker;

/// Bounds of a turn, fixed at start-up.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most model calls in one turn.
    pub max_rounds: u32,
    /// Most handoffs between agents in one turn.
    pub max_handoffs: u32,
}

/// What the rules need, built once at start-up and shared by every request: the store,
/// the model routing, the tools the server runs, the history cache, the turn's bounds, the
/// runs in flight and the files. The HTTP layer holds one (in its shared state) and is its only
/// caller; nothing here knows about requests, keys or sockets.
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub models: ModelRouter,
    /// Servers that run tools for the model.
    pub connectors: Connectors,
    /// Histories by head entry (immutable, so never stale).
    pub histories: history::HistoryCache,
    pub limits: Limits,
    /// Runs in flight: shutdown waits for them so no started turn is lost.
    pub runs: TaskTracker,
    /// Queues concurrent updates of one agent in this process.
    pub agent_locks: agents::UpdateLocks,
    /// The events of the latest streamed run of each conversation, for resuming.
    pub streams: streams::RunLogs,
    /// How long an `Idempotency-Key`'s answer is kept.
    pub idempotency_ttl: std::time::Duration,
    /// Uploads, tool outputs, downloads and signed links (`store_output` for the tools).
    pub files: Arc<files::Files>,
}

impl Engine {
    /// Answers when the store does; backs `GET /health`.
    pub async fn ping(&self) -> Result<()> {
        Ok(self.store.ping().await?)
    }

    /// The models `GET /v1/models` lists.
    pub async fn model_cards(&self) -> Result<Vec<ModelCard>> {
        self.models.cards().await
    }

    /// Waits up to `grace` for the runs in flight to commit, then closes the store.
    pub async fn shut_down(&self, grace: std::time::Duration) {
        self.runs.close();
        if tokio::time::timeout(grace, self.runs.wait()).await.is_err() {
            tracing::warn!(
                open_runs = self.runs.len(),
                "shutdown: runs still open after the grace period; they store nothing"
            );
        }
        self.store.close().await;
    }
}
