-- per-key cost limits and what each key submitted per UTC day (budgets).
ALTER TABLE api_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
CREATE TABLE key_usage (
    api_key_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    megapixel_frames REAL NOT NULL,
    did_scenes INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, day)
);
