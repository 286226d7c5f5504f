-- Stored templates (a spec with {{ NAME }} placeholders and its fields), owned by a key.
CREATE TABLE templates (
    id TEXT PRIMARY KEY,
    api_key_id TEXT,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX templates_key ON templates(api_key_id, id);
-- A batch: one template (as it was when the batch was made) and many rows, each rendered as a
-- generation at a lower priority than interactive requests.
CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    api_key_id TEXT,
    template_id TEXT,
    template TEXT NOT NULL,
    options TEXT NOT NULL,
    state TEXT NOT NULL,
    total BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX batches_key ON batches(api_key_id, state, id);
-- status: pending (not yet submitted), invalid, refused, cancelled, submitted (its generation
-- is queued or running), done (its generation finished: the job says how).
CREATE TABLE batch_rows (
    batch_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    merge TEXT NOT NULL,
    status TEXT NOT NULL,
    generation_id TEXT,
    error TEXT,
    PRIMARY KEY (batch_id, idx)
);
CREATE INDEX batch_rows_status ON batch_rows(batch_id, status, idx);
