//! SQL text both backends run unchanged (`$N` placeholders work on both). Dialect-specific
//! pieces are passed in by the backend that needs them. Composed statements are built
//! once (`LazyLock`), not on every query.

use std::sync::LazyLock;

/// The columns every agent query selects, in the order `AgentRow` reads them.
const AGENT_COLUMNS: &str = "a.id, v.version, a.active_version, a.latest_version, a.revision, \
     a.created_at, a.updated_at, v.config";

const AGENT_JOIN: &str = "FROM agents a JOIN agent_versions v ON v.workspace = a.workspace AND v.agent_id = a.id";

pub const INSERT_AGENT: &str = "INSERT INTO agents \
     (workspace, id, active_version, latest_version, revision, created_at, updated_at) \
     VALUES ($1, $2, 0, 0, 0, $3, $3)";

pub const INSERT_VERSION: &str = "INSERT INTO agent_versions \
     (workspace, agent_id, version, name, deployment_chat, metadata, config, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub const AGENT_EXISTS: &str = "SELECT id FROM agents WHERE workspace = $1 AND id = $2";

/// Binds: workspace, id.
pub static SELECT_ACTIVE_AGENT: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {AGENT_COLUMNS} {AGENT_JOIN} AND v.version = a.active_version WHERE a.workspace = $1 AND a.id = $2")
});

/// Binds: workspace, id, version.
pub static SELECT_AGENT_VERSION: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {AGENT_COLUMNS} {AGENT_JOIN} AND v.version = $3 WHERE a.workspace = $1 AND a.id = $2")
});

/// Binds: workspace, id, alias.
pub static SELECT_AGENT_BY_ALIAS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {AGENT_COLUMNS} {AGENT_JOIN} JOIN agent_aliases al ON al.workspace = a.workspace \
         AND al.agent_id = a.id AND al.version = v.version \
         WHERE a.workspace = $1 AND a.id = $2 AND al.alias = $3"
    )
});

/// Binds: workspace, name, id, deployment_chat, search pattern, before_id, metadata, limit,
/// offset. `metadata_matches` is the backend's test (see `metadata_matches` in each
/// backend) that `v.metadata` holds every key/value of the JSON object `$7`.
pub fn list_agents(metadata_matches: &str) -> String {
    format!(
        "SELECT {AGENT_COLUMNS} {AGENT_JOIN} AND v.version = a.active_version \
         WHERE a.workspace = $1 \
         AND ($2 IS NULL OR v.name = $2) \
         AND ($3 IS NULL OR a.id = $3) \
         AND ($4 IS NULL OR v.deployment_chat = $4) \
         AND ($5 IS NULL OR LOWER(v.name) LIKE $5 ESCAPE '\\' OR a.id LIKE $5 ESCAPE '\\') \
         AND ($6 IS NULL OR a.id < $6) \
         AND ($7 IS NULL OR {metadata_matches}) \
         ORDER BY a.id DESC LIMIT $8 OFFSET $9"
    )
}

/// Binds: workspace, id, limit, offset.
pub static LIST_AGENT_VERSIONS: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {AGENT_COLUMNS} {AGENT_JOIN} WHERE a.workspace = $1 AND a.id = $2 ORDER BY v.version LIMIT $3 OFFSET $4")
});

/// The first statement of an update's transaction (so SQLite takes its write lock at once):
/// allocates the next version number if the revision is unchanged. Binds: workspace, id,
/// expected revision, now.
pub const BUMP_AGENT_FOR_NEW_VERSION: &str = "UPDATE agents SET latest_version = latest_version + 1, \
     active_version = latest_version + 1, revision = revision + 1, updated_at = $4 \
     WHERE workspace = $1 AND id = $2 AND revision = $3 RETURNING latest_version";

/// Binds: workspace, id, version, now.
pub const ACTIVATE_VERSION: &str = "UPDATE agents SET active_version = $3, revision = revision + 1, updated_at = $4 \
     WHERE workspace = $1 AND id = $2 AND EXISTS (SELECT 1 FROM agent_versions v \
     WHERE v.workspace = $1 AND v.agent_id = $2 AND v.version = $3)";

pub const DELETE_AGENT: &str = "DELETE FROM agents WHERE workspace = $1 AND id = $2";

/// Binds: workspace, id, alias, version, now.
pub const UPSERT_ALIAS: &str = "INSERT INTO agent_aliases (workspace, agent_id, alias, version, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $5) \
     ON CONFLICT (workspace, agent_id, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at \
     RETURNING alias, version, created_at, updated_at";

pub const LIST_ALIASES: &str = "SELECT alias, version, created_at, updated_at FROM agent_aliases \
     WHERE workspace = $1 AND agent_id = $2 ORDER BY created_at, alias";

pub const DELETE_ALIAS: &str = "DELETE FROM agent_aliases WHERE workspace = $1 AND agent_id = $2 AND alias = $3";

const CONVERSATION_COLUMNS: &str = "id, head_entry_id, agent_id, agent_version, model, instructions, tools, \
     completion_args, guardrails, name, description, metadata, created_at, updated_at";

/// Binds, in `CONVERSATION_COLUMNS` order after the workspace: 15 values.
pub static INSERT_CONVERSATION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO conversations (workspace, {CONVERSATION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    )
});

/// The compare-and-set that makes a turn atomic against concurrent appends: moves the head
/// only if it is still the one the turn was built on. Binds: workspace, id, new head, now,
/// expected head.
pub const ADVANCE_HEAD: &str = "UPDATE conversations SET head_entry_id = $3, updated_at = $4 \
     WHERE workspace = $1 AND id = $2 AND head_entry_id = $5";

/// Binds: workspace, id.
pub static SELECT_CONVERSATION: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE workspace = $1 AND id = $2"));

/// A conversation with the agent version its turns run with, in one round trip: the
/// conversation's columns, then `AGENT_COLUMNS` (as `av_*`, so no name repeats one of the
/// conversation's) for its agent's active version, the version number or the alias it
/// follows — or NULL version columns when its agent or that version is gone (the caller
/// then reads the agent on its own, for the right error). `version_number` and
/// `version_text` are the backend's expressions for `c.agent_version` as an integer when it
/// holds a JSON number, and as text when it holds a JSON string (else NULL). Binds:
/// workspace, id.
pub fn select_conversation_with_agent(version_number: &str, version_text: &str) -> String {
    let conversation: Vec<String> = CONVERSATION_COLUMNS.split(',').map(|c| format!("c.{}", c.trim())).collect();
    let agent: Vec<String> = AGENT_COLUMNS
        .split(',')
        .map(|c| {
            let c = c.trim();
            format!("{c} AS av_{}", c.split_once('.').map_or(c, |(_, name)| name))
        })
        .collect();
    format!(
        "SELECT {}, {} \
         FROM conversations c \
         LEFT JOIN agents a ON a.workspace = c.workspace AND a.id = c.agent_id \
         LEFT JOIN agent_versions v ON v.workspace = a.workspace AND v.agent_id = a.id \
         AND v.version = CASE WHEN c.agent_version IS NULL THEN a.active_version \
         ELSE COALESCE({version_number}, (SELECT al.version FROM agent_aliases al \
         WHERE al.workspace = c.workspace AND al.agent_id = c.agent_id AND al.alias = {version_text})) END \
         WHERE c.workspace = $1 AND c.id = $2",
        conversation.join(", "),
        agent.join(", ")
    )
}

/// Binds: workspace, metadata filter, limit, offset.
pub fn list_conversations(metadata_matches: &str) -> String {
    format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE workspace = $1 \
         AND ($2 IS NULL OR {metadata_matches}) \
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    )
}

pub const DELETE_CONVERSATION: &str = "DELETE FROM conversations WHERE workspace = $1 AND id = $2";

/// The path from the root to entry `$2`, oldest first: one query however long the history.
pub const HISTORY: &str = "WITH RECURSIVE chain(id, parent_id, depth, body) AS ( \
       SELECT id, parent_id, depth, body FROM entries WHERE workspace = $1 AND id = $2 \
       UNION ALL \
       SELECT e.id, e.parent_id, e.depth, e.body FROM entries e JOIN chain c \
         ON e.workspace = $1 AND e.id = c.parent_id \
     ) SELECT body FROM chain ORDER BY depth";
