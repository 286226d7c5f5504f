CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT,
    payload TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    backoff_base_ms INTEGER NOT NULL,
    backoff_max_ms INTEGER NOT NULL,
    jitter REAL NOT NULL,
    timeout_ms INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    dedup_key TEXT UNIQUE,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER
);
CREATE INDEX jobs_ready ON jobs(queue, state, priority DESC, run_at, id);
CREATE INDEX jobs_lease ON jobs(queue, state, lease_until);
CREATE INDEX jobs_state ON jobs(state, queue, run_at);
CREATE INDEX jobs_subject ON jobs(subject, kind);
CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE job_attempts (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
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
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT,
    error_code TEXT,
    error_message TEXT,
    result TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX generations_hash ON generations(spec_hash, api_key_id);
CREATE INDEX generations_job ON generations(job_id);
CREATE UNIQUE INDEX generations_idempotency ON generations(api_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX generations_key ON generations(api_key_id, id);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    rate_per_s REAL NOT NULL,
    burst INTEGER NOT NULL,
    max_concurrent_jobs INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE assets (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    media_type TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    width INTEGER,
    height INTEGER,
    file_name TEXT,
    api_key_id TEXT,
    created_at INTEGER NOT NULL
);
