CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT,
    payload TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    backoff_base_ms BIGINT NOT NULL,
    backoff_max_ms BIGINT NOT NULL,
    jitter DOUBLE PRECISION NOT NULL,
    timeout_ms BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    dedup_key TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
-- Partial indexes: a state change moves a job out of one and into another, and finished jobs
-- (the bulk of the table) are in neither, so the claim path stays small.
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_lease ON jobs (queue, lease_until) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_dedup ON jobs (dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX jobs_subject ON jobs (subject, kind) WHERE subject IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
-- A queue table churns: vacuum it long before the default 20% of dead rows.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.05);
CREATE TABLE job_attempts (
    job_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    worker TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    outcome TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE generations (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    spec TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    priority INTEGER NOT NULL,
    webhook_url TEXT,
    idempotency_key TEXT,
    request_hash TEXT NOT NULL,
    api_key_id TEXT,
    metadata TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    stage TEXT,
    error_code TEXT,
    error_message TEXT,
    result TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX generations_hash ON generations (spec_hash, api_key_id);
CREATE INDEX generations_job ON generations (job_id);
-- COALESCE: keyless requests share one idempotency namespace (NULLs would never collide).
CREATE UNIQUE INDEX generations_idempotency ON generations (COALESCE(api_key_id, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX generations_key ON generations (api_key_id, id);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    rate_per_s DOUBLE PRECISION NOT NULL,
    burst BIGINT NOT NULL,
    max_concurrent_jobs BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE TABLE assets (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    media_type TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    width BIGINT,
    height BIGINT,
    file_name TEXT,
    api_key_id TEXT,
    created_at BIGINT NOT NULL
);
