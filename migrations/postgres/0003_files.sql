-- Files (DESIGN decision 9): metadata here, bytes in a blob store. The blob is written
-- before its row and removed after it, so a row always has its bytes; a crash in between
-- can only leave bytes without a row, never the reverse.

CREATE TABLE files (
    workspace   TEXT   NOT NULL,
    -- A UUID, as in the hosted API.
    id          TEXT   NOT NULL,
    filename    TEXT   NOT NULL,
    bytes       BIGINT NOT NULL,
    purpose     TEXT   NOT NULL,
    sample_type TEXT   NOT NULL,
    source      TEXT   NOT NULL,
    mimetype    TEXT,
    num_lines   BIGINT,
    visibility  TEXT,
    -- Unix seconds, as on the wire (NULL: never expires).
    expires_at  BIGINT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (workspace, id)
);

CREATE INDEX files_by_creation ON files (workspace, created_at DESC, id DESC);

-- The bytes of files when the database is the blob store (`[files] storage = "database"`,
-- the default for Postgres): chunks of at most 1 MiB, numbered from 0, so uploads and
-- downloads go through memory one chunk at a time. No foreign key to `files`: the chunks
-- are written before the row.
CREATE TABLE file_chunks (
    workspace TEXT   NOT NULL,
    file_id   TEXT   NOT NULL,
    seq       BIGINT NOT NULL,
    data      BYTEA  NOT NULL,
    PRIMARY KEY (workspace, file_id, seq)
);

-- Server-wide values every replica must agree on (the key that signs file links when the
-- config names none), written once by whichever process gets there first.
CREATE TABLE settings (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
