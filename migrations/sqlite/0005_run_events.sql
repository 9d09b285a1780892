-- The events of each conversation's latest streamed run, so that a client whose stream
-- dropped can resume it from any replica (`GET /v1/conversations/{id}/stream`). Written in
-- batches while the run goes on; deleted a while after the run ended.

CREATE TABLE runs (
    workspace       TEXT   NOT NULL,
    conversation_id TEXT   NOT NULL,
    run_id          TEXT   NOT NULL,
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    PRIMARY KEY (workspace, conversation_id)
);

CREATE TABLE run_events (
    workspace       TEXT   NOT NULL,
    conversation_id TEXT   NOT NULL,
    run_id          TEXT   NOT NULL,
    seq             BIGINT NOT NULL,
    name            TEXT   NOT NULL,
    data            TEXT   NOT NULL,
    PRIMARY KEY (workspace, conversation_id, run_id, seq)
);
