-- Idempotency-Key: the first successful answer to a request, replayed to its retries. A
-- row without a status is a claim: that request is still running (or its process died;
-- a claim older than the run lease may be taken over). Rows live until `expires_at`.

CREATE TABLE idempotency_keys (
    workspace    TEXT   NOT NULL,
    request_key  TEXT   NOT NULL,
    -- SHA-256 of the method, path and body the key was first used with.
    fingerprint  TEXT   NOT NULL,
    status       INTEGER,
    content_type TEXT,
    body         BYTEA,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace, request_key)
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
