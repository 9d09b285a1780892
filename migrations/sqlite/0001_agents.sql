-- Agents are immutable versions (DESIGN decision 4): one `agents` row is the pointer to the
-- active version, `agent_versions` rows are never updated, aliases name versions.
-- Every row carries its workspace (tenant); times are microseconds since the Unix epoch, UTC,
-- so both backends store and compare them the same way.

CREATE TABLE agents (
    workspace      TEXT    NOT NULL,
    id             TEXT    NOT NULL,
    active_version BIGINT  NOT NULL,
    latest_version BIGINT  NOT NULL,
    -- Bumped by every change; updates compare-and-set on it so concurrent PATCHes never
    -- build a version on a stale base.
    revision       BIGINT  NOT NULL,
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    PRIMARY KEY (workspace, id)
);

CREATE TABLE agent_versions (
    workspace       TEXT    NOT NULL,
    agent_id        TEXT    NOT NULL,
    version         BIGINT  NOT NULL,
    -- Copies of `config` members that list filters need in SQL.
    name            TEXT    NOT NULL,
    deployment_chat BOOLEAN NOT NULL,
    metadata        TEXT,
    config          TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (workspace, agent_id, version),
    FOREIGN KEY (workspace, agent_id) REFERENCES agents (workspace, id) ON DELETE CASCADE
);

CREATE TABLE agent_aliases (
    workspace  TEXT   NOT NULL,
    agent_id   TEXT   NOT NULL,
    alias      TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace, agent_id, alias),
    FOREIGN KEY (workspace, agent_id, version)
        REFERENCES agent_versions (workspace, agent_id, version) ON DELETE CASCADE
);
