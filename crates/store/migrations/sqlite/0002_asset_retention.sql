-- assets remember their last use (retention) and are counted per key (storage quota).
ALTER TABLE assets ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
UPDATE assets SET last_used_at = created_at;
CREATE INDEX assets_key ON assets (api_key_id);
CREATE INDEX assets_last_used ON assets (last_used_at);
