-- Issue 16: the connection a discovered tenant was last found with (JSON: engine, the discovery
-- source's URL, the database URL or file path, where its password comes from; never a password),
-- so that a tenant discovery no longer lists can still be restored while its backups exist.
-- NULL for tenants from `[[tenants]]` (the config names them) and for tenants not seen since.
ALTER TABLE tenants ADD COLUMN connection TEXT;
