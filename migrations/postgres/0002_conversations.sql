-- Conversations are head pointers into a tree of entries (DESIGN decision 3). Entries are
-- written once and shared by a conversation and every restart branched from it; history is
-- the path from the root to the head. A turn moves the head with a compare-and-set on
-- `head_entry_id`.

CREATE TABLE conversations (
    workspace       TEXT   NOT NULL,
    id              TEXT   NOT NULL,
    head_entry_id   TEXT,
    -- Exactly one of `agent_id` and `model` is set.
    agent_id        TEXT,
    -- JSON: the number or alias the conversation was started with, NULL = active version.
    agent_version   JSONB,
    model           TEXT,
    instructions    TEXT,
    tools           JSONB,
    completion_args JSONB,
    guardrails      JSONB,
    name            TEXT,
    description     TEXT,
    metadata        JSONB,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (workspace, id)
);

CREATE INDEX conversations_by_creation ON conversations (workspace, created_at DESC, id DESC);

CREATE TABLE entries (
    workspace  TEXT   NOT NULL,
    id         TEXT   NOT NULL,
    parent_id  TEXT,
    -- Distance from the root (root = 0): orders a history without sorting on time.
    depth      BIGINT NOT NULL,
    -- The conversation whose turn wrote the entry (restarts share it, not copy it).
    conversation_id TEXT NOT NULL,
    kind       TEXT   NOT NULL,
    body       JSONB  NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace, id)
);
