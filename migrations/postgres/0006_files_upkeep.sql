-- Files uploaded with an `expiry` are purged once it passes (reads stop seeing them at
-- once): the purge finds them by this index, which holds only the files that expire.
CREATE INDEX files_by_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;

-- When each chunk was written (unix seconds): bytes that no file row names, left by a crash
-- between an upload's bytes and its row, are deleted once they are old enough that no
-- upload can still be writing them. NULL: written before this column existed.
ALTER TABLE file_chunks ADD COLUMN created_at BIGINT;
