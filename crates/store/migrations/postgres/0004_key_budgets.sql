-- per-key cost limits and what each key submitted per UTC day (budgets).
ALTER TABLE api_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
CREATE TABLE key_usage (
    api_key_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    megapixel_frames DOUBLE PRECISION NOT NULL,
    did_scenes BIGINT NOT NULL,
    PRIMARY KEY (api_key_id, day)
);
