-- Which audit key an entry's hash was made with (issue 18): NULL for an entry hashed with plain
-- SHA-256 (every entry written before, and entries written without `[audit] key-file`/`key-env`),
-- else the key's id (the first 16 hex digits of HMAC-SHA256(key, "lifeboat-audit-key-id")), and
-- the hash is HMAC-SHA256 with that key. ADD COLUMN rewrites no row, so the append-only
-- triggers neither fire nor need changing.
ALTER TABLE audit_log ADD COLUMN key_id TEXT;
