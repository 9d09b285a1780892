//! SQL text both backends run unchanged (`$N` placeholders work on both), and the columns of
//! each table, named once. Dialect-specific pieces are passed in by the backend that needs
//! them. Composed statements are built once (`LazyLock`), not on every query.
//!
//! A table's columns are an enum (`Conversation::Tools`, …) whose `ALL` lists them in the
//! order statements write them. The statements here take their column lists and
//! placeholders from it; each backend binds a row with one `match` over it (so a column it
//! does not bind fails to compile) and reads a row back by the columns' names (so no read
//! depends on where a column sits in a result). A new column is then one variant here, one
//! arm and one field read in each backend, and the migrations.

use std::sync::LazyLock;

/// The columns of one table, the workspace aside: every row has one and every statement
/// binds it as `$1`.
pub trait Columns: Copy + 'static {
    /// Every column, in the order statements list (and backends bind) them.
    const ALL: &'static [Self];

    /// The column's name, which a row is read back by.
    fn name(self) -> &'static str;

    /// The name the column is read by in `select_conversation_with_agent`, where the
    /// conversation's own `id`, `created_at`, … come first in the same row.
    fn joined(self) -> &'static str;
}

macro_rules! columns {
    ($(#[$doc:meta])* pub enum $name:ident { $($variant:ident = $column:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant,)+
        }

        impl Columns for $name {
            const ALL: &'static [Self] = &[$(Self::$variant,)+];

            fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $column,)+
                }
            }

            fn joined(self) -> &'static str {
                match self {
                    $(Self::$variant => concat!("av_", $column),)+
                }
            }
        }
    };
}

columns! {
    /// `agents`: one row per agent, the pointer to its active version.
    pub enum Agent {
        Id = "id",
        ActiveVersion = "active_version",
        LatestVersion = "latest_version",
        Revision = "revision",
        CreatedAt = "created_at",
        UpdatedAt = "updated_at",
    }
}

columns! {
    /// `agent_versions`: one row per version, never updated. `name`, `deployment_chat` and
    /// `metadata` copy members of `config` that list filters need in SQL.
    pub enum AgentVersion {
        AgentId = "agent_id",
        Version = "version",
        Name = "name",
        DeploymentChat = "deployment_chat",
        Metadata = "metadata",
        Config = "config",
        CreatedAt = "created_at",
    }
}

columns! {
    /// `agent_aliases`: a name for one version of an agent.
    pub enum AgentAlias {
        AgentId = "agent_id",
        Alias = "alias",
        Version = "version",
        CreatedAt = "created_at",
        UpdatedAt = "updated_at",
    }
}

columns! {
    /// `conversations`: a conversation's settings and the head of its branch.
    pub enum Conversation {
        Id = "id",
        Head = "head_entry_id",
        AgentId = "agent_id",
        AgentVersion = "agent_version",
        Model = "model",
        Instructions = "instructions",
        Tools = "tools",
        CompletionArgs = "completion_args",
        Guardrails = "guardrails",
        Name = "name",
        Description = "description",
        Metadata = "metadata",
        CreatedAt = "created_at",
        UpdatedAt = "updated_at",
    }
}

columns! {
    /// `entries`: one node of a workspace's entry tree, written once.
    pub enum Entry {
        Id = "id",
        ParentId = "parent_id",
        Depth = "depth",
        ConversationId = "conversation_id",
        Kind = "kind",
        Body = "body",
        CreatedAt = "created_at",
    }
}

columns! {
    /// `files`: one uploaded or tool-produced file's metadata; its bytes are in the blob store.
    pub enum File {
        Id = "id",
        Filename = "filename",
        Bytes = "bytes",
        Purpose = "purpose",
        SampleType = "sample_type",
        Source = "source",
        Mimetype = "mimetype",
        NumLines = "num_lines",
        Visibility = "visibility",
        ExpiresAt = "expires_at",
        CreatedAt = "created_at",
    }
}

/// What an `AgentRecord` reads of its version, beside every column of the agent's row.
pub const AGENT_VERSION_READ: [AgentVersion; 2] = [AgentVersion::Version, AgentVersion::Config];

/// Which names a result gives an `AgentRecord`'s columns.
#[derive(Debug, Clone, Copy)]
pub enum Naming {
    /// Their own: the row holds nothing else.
    Own,
    /// `Columns::joined`: the row starts with a conversation's columns.
    Joined,
}

impl Naming {
    pub fn of(self, column: impl Columns) -> &'static str {
        match self {
            Naming::Own => column.name(),
            Naming::Joined => column.joined(),
        }
    }
}

/// `t.a, t.b, …` (or `a, b, …` without a table alias).
pub fn list<C: Columns>(columns: &[C], table: Option<&str>) -> String {
    let prefix = table.map(|t| format!("{t}.")).unwrap_or_default();
    columns.iter().map(|c| format!("{prefix}{}", c.name())).collect::<Vec<_>>().join(", ")
}

/// `$first, …`: one placeholder per column.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `INSERT INTO table (workspace, <every column>) VALUES ($1, $2, …)`.
fn insert<C: Columns>(table: &str) -> String {
    format!("INSERT INTO {table} (workspace, {}) VALUES ($1, {})", list(C::ALL, None), placeholders(2, C::ALL.len()))
}

/// The select list of an `AgentRecord`: the agent's row (`a`), then its version (`v`).
fn agent_columns(naming: Naming) -> String {
    let agent = Agent::ALL.iter().map(|&c| ("a", c.name(), naming.of(c)));
    let version = AGENT_VERSION_READ.iter().map(|&c| ("v", c.name(), naming.of(c)));
    agent
        .chain(version)
        .map(
            |(table, name, read_as)| {
                if name == read_as {
                    format!("{table}.{name}")
                } else {
                    format!("{table}.{name} AS {read_as}")
                }
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

static AGENT_COLUMNS: LazyLock<String> = LazyLock::new(|| agent_columns(Naming::Own));

const AGENT_JOIN: &str = "FROM agents a JOIN agent_versions v ON v.workspace = a.workspace AND v.agent_id = a.id";

/// Binds: workspace, then `Agent::ALL`.
pub static INSERT_AGENT: LazyLock<String> = LazyLock::new(|| insert::<Agent>("agents"));

/// Binds: workspace, then `AgentVersion::ALL`.
pub static INSERT_VERSION: LazyLock<String> = LazyLock::new(|| insert::<AgentVersion>("agent_versions"));

pub const AGENT_EXISTS: &str = "SELECT id FROM agents WHERE workspace = $1 AND id = $2";

/// Binds: workspace, id.
pub static SELECT_ACTIVE_AGENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} {AGENT_JOIN} AND v.version = a.active_version WHERE a.workspace = $1 AND a.id = $2",
        *AGENT_COLUMNS
    )
});

/// The active versions of several agents. Binds: workspace, then the ids as the backend's
/// list (`ids` is its test that `a.id` is one of them: `= ANY($2)`, or `IN (json_each)`).
pub fn select_active_agents(ids: &str) -> String {
    format!(
        "SELECT {} {AGENT_JOIN} AND v.version = a.active_version WHERE a.workspace = $1 AND {ids} ORDER BY a.id",
        *AGENT_COLUMNS
    )
}

/// Binds: workspace, id, version.
pub static SELECT_AGENT_VERSION: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {} {AGENT_JOIN} AND v.version = $3 WHERE a.workspace = $1 AND a.id = $2", *AGENT_COLUMNS)
});

/// Binds: workspace, id, alias.
pub static SELECT_AGENT_BY_ALIAS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} {AGENT_JOIN} JOIN agent_aliases al ON al.workspace = a.workspace \
         AND al.agent_id = a.id AND al.version = v.version \
         WHERE a.workspace = $1 AND a.id = $2 AND al.alias = $3",
        *AGENT_COLUMNS
    )
});

/// Binds: workspace, name, id, deployment_chat, search pattern, before_id, metadata, limit,
/// offset. `metadata_matches` is the backend's test (see `metadata_matches` in each
/// backend) that `v.metadata` holds every key/value of the JSON object `$7`.
pub fn list_agents(metadata_matches: &str) -> String {
    format!(
        "SELECT {} {AGENT_JOIN} AND v.version = a.active_version \
         WHERE a.workspace = $1 \
         AND ($2 IS NULL OR v.name = $2) \
         AND ($3 IS NULL OR a.id = $3) \
         AND ($4 IS NULL OR v.deployment_chat = $4) \
         AND ($5 IS NULL OR LOWER(v.name) LIKE $5 ESCAPE '\\' OR a.id LIKE $5 ESCAPE '\\') \
         AND ($6 IS NULL OR a.id < $6) \
         AND ($7 IS NULL OR {metadata_matches}) \
         ORDER BY a.id DESC LIMIT $8 OFFSET $9",
        *AGENT_COLUMNS
    )
}

/// Binds: workspace, id, limit, offset.
pub static LIST_AGENT_VERSIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} {AGENT_JOIN} WHERE a.workspace = $1 AND a.id = $2 ORDER BY v.version LIMIT $3 OFFSET $4",
        *AGENT_COLUMNS
    )
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

/// Binds: workspace, then `AgentAlias::ALL`. Moving an alias keeps its `created_at`.
pub static UPSERT_ALIAS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} ON CONFLICT (workspace, agent_id, alias) \
         DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at RETURNING {}",
        insert::<AgentAlias>("agent_aliases"),
        list(AgentAlias::ALL, None)
    )
});

/// Binds: workspace, agent id.
pub static LIST_ALIASES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM agent_aliases WHERE workspace = $1 AND agent_id = $2 ORDER BY created_at, alias",
        list(AgentAlias::ALL, None)
    )
});

pub const DELETE_ALIAS: &str = "DELETE FROM agent_aliases WHERE workspace = $1 AND agent_id = $2 AND alias = $3";

/// Binds: workspace, then `Conversation::ALL`.
pub static INSERT_CONVERSATION: LazyLock<String> = LazyLock::new(|| insert::<Conversation>("conversations"));

/// The compare-and-set that makes a turn atomic against concurrent appends: moves the head
/// only if it is still the one the turn was built on. Binds: workspace, id, new head, now,
/// expected head.
pub const ADVANCE_HEAD: &str = "UPDATE conversations SET head_entry_id = $3, updated_at = $4 \
     WHERE workspace = $1 AND id = $2 AND head_entry_id = $5";

/// Binds: workspace, id.
pub static SELECT_CONVERSATION: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {} FROM conversations WHERE workspace = $1 AND id = $2", list(Conversation::ALL, None))
});

/// A conversation with the agent version its turns run with, in one round trip: the
/// conversation's columns, then an `AgentRecord`'s (named `Naming::Joined`) for its
/// agent's active version, the version number or the alias it follows — or NULL version
/// columns when its agent or that version is gone (the caller then reads the agent on its
/// own, for the right error). `version_number` and `version_text` are the backend's
/// expressions for `c.agent_version` as an integer when it holds a JSON number, and as text
/// when it holds a JSON string (else NULL). Binds: workspace, id.
pub fn select_conversation_with_agent(version_number: &str, version_text: &str) -> String {
    format!(
        "SELECT {}, {} \
         FROM conversations c \
         LEFT JOIN agents a ON a.workspace = c.workspace AND a.id = c.agent_id \
         LEFT JOIN agent_versions v ON v.workspace = a.workspace AND v.agent_id = a.id \
         AND v.version = CASE WHEN c.agent_version IS NULL THEN a.active_version \
         ELSE COALESCE({version_number}, (SELECT al.version FROM agent_aliases al \
         WHERE al.workspace = c.workspace AND al.agent_id = c.agent_id AND al.alias = {version_text})) END \
         WHERE c.workspace = $1 AND c.id = $2",
        list(Conversation::ALL, Some("c")),
        agent_columns(Naming::Joined)
    )
}

/// Binds: workspace, metadata filter, limit, offset.
pub fn list_conversations(metadata_matches: &str) -> String {
    format!(
        "SELECT {} FROM conversations c WHERE workspace = $1 \
         AND ($2 IS NULL OR {metadata_matches}) \
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4",
        list(Conversation::ALL, None)
    )
}

/// Claims an idempotency key ($3 fingerprint, $4 now, $5 expiry): a new row, or one whose
/// answer expired or whose claim was abandoned (a claim made before $6) is taken over.
pub const CLAIM_KEY: &str = "INSERT INTO idempotency_keys \
     (workspace, request_key, fingerprint, status, content_type, body, created_at, expires_at) \
     VALUES ($1, $2, $3, NULL, NULL, NULL, $4, $5) \
     ON CONFLICT (workspace, request_key) DO UPDATE SET fingerprint = excluded.fingerprint, status = NULL, \
     content_type = NULL, body = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at \
     WHERE idempotency_keys.expires_at <= $4 \
        OR (idempotency_keys.status IS NULL AND idempotency_keys.created_at <= $6)";

pub const SELECT_KEY: &str = "SELECT fingerprint, status, content_type, body FROM idempotency_keys \
     WHERE workspace = $1 AND request_key = $2";

/// Records the answer of a claimed key; only the claim of `fingerprint` $3 is answered.
pub const FINISH_KEY: &str = "UPDATE idempotency_keys SET status = $4, content_type = $5, body = $6 \
     WHERE workspace = $1 AND request_key = $2 AND fingerprint = $3 AND status IS NULL";

/// Keeps a claim alive ($4 now): a claim that stops being touched was left by a process
/// that died.
pub const TOUCH_KEY: &str = "UPDATE idempotency_keys SET created_at = $4 \
     WHERE workspace = $1 AND request_key = $2 AND fingerprint = $3 AND status IS NULL";

/// Gives a claim up, so that a retry runs the request again.
pub const RELEASE_KEY: &str = "DELETE FROM idempotency_keys \
     WHERE workspace = $1 AND request_key = $2 AND fingerprint = $3 AND status IS NULL";

/// Makes run $3 (started $4, ended $5 or NULL) the latest of conversation $2, unless a run
/// that started later already is.
pub const UPSERT_RUN: &str = "INSERT INTO runs (workspace, conversation_id, run_id, started_at, finished_at) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (workspace, conversation_id) DO UPDATE SET run_id = excluded.run_id, \
     started_at = excluded.started_at, finished_at = excluded.finished_at \
     WHERE runs.run_id = excluded.run_id OR runs.started_at <= excluded.started_at";

pub const SELECT_RUN: &str = "SELECT run_id, finished_at FROM runs WHERE workspace = $1 AND conversation_id = $2";

pub const SELECT_RUN_EVENTS: &str = "SELECT seq, name, data FROM run_events \
     WHERE workspace = $1 AND conversation_id = $2 AND run_id = $3 AND seq > $4 ORDER BY seq";

/// Events of runs that ended before $1, or that a newer run replaced.
pub const PURGE_RUN_EVENTS: &str = "DELETE FROM run_events WHERE NOT EXISTS (SELECT 1 FROM runs r \
     WHERE r.workspace = run_events.workspace AND r.conversation_id = run_events.conversation_id \
     AND r.run_id = run_events.run_id AND (r.finished_at IS NULL OR r.finished_at >= $1))";

pub const PURGE_RUNS: &str = "DELETE FROM runs WHERE finished_at < $1";

pub const PURGE_KEYS: &str = "DELETE FROM idempotency_keys WHERE expires_at <= $1";

pub const DELETE_CONVERSATION: &str = "DELETE FROM conversations WHERE workspace = $1 AND id = $2";

/// One entry row. Binds: workspace, then `Entry::ALL`.
pub static INSERT_ENTRY: LazyLock<String> = LazyLock::new(|| insert::<Entry>("entries"));

/// The path from the root to entry `$2`, oldest first: one query however long the history.
/// Yields `Entry::Body`.
pub const HISTORY: &str = "WITH RECURSIVE chain(id, parent_id, depth, body) AS ( \
       SELECT id, parent_id, depth, body FROM entries WHERE workspace = $1 AND id = $2 \
       UNION ALL \
       SELECT e.id, e.parent_id, e.depth, e.body FROM entries e JOIN chain c \
         ON e.workspace = $1 AND e.id = c.parent_id \
     ) SELECT body FROM chain ORDER BY depth";

/// Binds: workspace, then `File::ALL`.
pub static INSERT_FILE: LazyLock<String> = LazyLock::new(|| insert::<File>("files"));

/// A file past its `expires_at` is gone for every read and delete, before the purge
/// removes it: `now` is the parameter bound to the time in unix seconds.
fn unexpired(now: &str) -> String {
    format!("(expires_at IS NULL OR expires_at > {now})")
}

/// Binds: workspace, id, now.
pub static SELECT_FILE: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {} FROM files WHERE workspace = $1 AND id = $2 AND {}", list(File::ALL, None), unexpired("$3"))
});

/// The filters of `GET /v1/files`. Binds: workspace, purpose, filename pattern, the lists
/// of sources, sample types and mimetypes (each NULL for "any"), then now. `any_of(column,
/// param)` is the backend's test that the column is one of the list bound as `param`
/// (`= ANY(…)`, or `IN (json_each …)`).
fn files_matching(any_of: fn(&str, &str) -> String) -> String {
    format!(
        "FROM files WHERE workspace = $1 \
         AND ($2 IS NULL OR purpose = $2) \
         AND ($3 IS NULL OR LOWER(filename) LIKE $3 ESCAPE '\\') \
         AND ($4 IS NULL OR {}) \
         AND ($5 IS NULL OR {}) \
         AND ($6 IS NULL OR {}) \
         AND {}",
        any_of("source", "$4"),
        any_of("sample_type", "$5"),
        any_of("mimetype", "$6"),
        unexpired("$7")
    )
}

/// Newest first. Binds: the filters of `files_matching`, then limit, offset.
pub fn list_files(any_of: fn(&str, &str) -> String) -> String {
    format!(
        "SELECT {} {} ORDER BY created_at DESC, id DESC LIMIT $8 OFFSET $9",
        list(File::ALL, None),
        files_matching(any_of)
    )
}

/// How many files the filters match. Binds: the filters of `files_matching`. Yields `total`.
pub fn count_files(any_of: fn(&str, &str) -> String) -> String {
    format!("SELECT COUNT(*) AS total {}", files_matching(any_of))
}

/// Binds: workspace, id, now.
pub static DELETE_FILE: LazyLock<String> =
    LazyLock::new(|| format!("DELETE FROM files WHERE workspace = $1 AND id = $2 AND {}", unexpired("$3")));

/// Deletes up to `$2` files whose `expires_at` is at or before `$1`, soonest expired first.
/// Yields the workspace and id of each, for their bytes to go next.
pub const PURGE_EXPIRED_FILES: &str = "DELETE FROM files WHERE (workspace, id) IN \
     (SELECT workspace, id FROM files WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2) \
     RETURNING workspace, id";

/// One chunk of a file's bytes (the database as blob store). Binds: workspace, file id,
/// chunk number, bytes, now (unix seconds).
pub const INSERT_CHUNK: &str =
    "INSERT INTO file_chunks (workspace, file_id, seq, data, created_at) VALUES ($1, $2, $3, $4, $5)";

/// Blobs that no file row names, whose first chunk was written before `$1` (unix seconds;
/// NULL: before chunks had times), at most `$2`. Yields `workspace`, `file_id`.
pub const UNNAMED_CHUNKS: &str = "SELECT workspace, file_id FROM file_chunks c \
     WHERE seq = 0 AND (created_at IS NULL OR created_at < $1) \
     AND NOT EXISTS (SELECT 1 FROM files f WHERE f.workspace = c.workspace AND f.id = c.file_id) \
     LIMIT $2";

/// Binds: workspace, file id, chunk number. Yields `data`.
pub const SELECT_CHUNK: &str = "SELECT data FROM file_chunks WHERE workspace = $1 AND file_id = $2 AND seq = $3";

pub const DELETE_CHUNKS: &str = "DELETE FROM file_chunks WHERE workspace = $1 AND file_id = $2";

/// Stores a setting unless one of that name exists: the first writer wins, every process
/// then reads the same value. Binds: name, value.
pub const INSERT_SETTING: &str = "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

/// Binds: name. Yields `value`.
pub const SELECT_SETTING: &str = "SELECT value FROM settings WHERE name = $1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_lists_every_column_with_a_placeholder_each() {
        assert_eq!(
            *INSERT_ENTRY,
            "INSERT INTO entries (workspace, id, parent_id, depth, conversation_id, kind, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
    }

    #[test]
    fn a_joined_agent_record_renames_only_where_names_differ() {
        assert_eq!(
            agent_columns(Naming::Joined),
            "a.id AS av_id, a.active_version AS av_active_version, a.latest_version AS av_latest_version, \
             a.revision AS av_revision, a.created_at AS av_created_at, a.updated_at AS av_updated_at, \
             v.version AS av_version, v.config AS av_config"
        );
        assert!(AGENT_COLUMNS.starts_with("a.id, a.active_version"));
    }
}
