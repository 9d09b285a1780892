-- Files uploaded with an `expiry` are purged once it passes (reads stop seeing them at
-- once): the purge finds them by this index, which holds only the files that expire.

CREATE INDEX files_by_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;
