-- The job queue (docs/jobs.md). Same columns on both engines.
-- `state` is what the workers need: queued (waiting, possibly for a retry),
-- running (held under a lease), succeeded, dead. The API's `failed` is a queued
-- job that has already failed an attempt (attempts > 0 and last_error set).
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    priority        INTEGER NOT NULL DEFAULT 0,
    run_at          BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    requested_by    TEXT,
    workspace_id    TEXT,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT
);
-- What a claim scans: waiting jobs, best priority first, then oldest due. The
-- columns are exactly the claim's ORDER BY (id included): with one fewer,
-- PostgreSQL sorted every row of a tie group (all due jobs) to take the first few.
CREATE INDEX jobs_ready ON jobs (priority DESC, run_at, id) WHERE state = 'queued';
-- What the lease reaper scans.
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_by_state ON jobs (state, kind);

-- Export results, keyed by job id: a rerun after a lost lease overwrites, never adds.
CREATE TABLE export_results (
    job_id       TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
