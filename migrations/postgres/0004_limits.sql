-- Per-user limits and retention (docs/configuration.md, "limits").

-- Analytics events are deleted by age (ANALYTICS_RETENTION, the nightly clean-up).
CREATE INDEX analytics_events_by_age ON analytics_events (created_at);

-- What the per-user export limit counts (EXPORTS_MAX_PENDING_PER_USER).
CREATE INDEX jobs_pending_by_requester ON jobs (requested_by, kind)
    WHERE state IN ('queued', 'running');

-- An export's CSV in pieces of about 256 KiB, written while the tasks are read and
-- streamed back in order: neither the worker nor the API holds a whole export in
-- memory. Each attempt writes its own pieces; the attempt that completes the job
-- names itself in export_results, and the others' pieces are deleted then.
CREATE TABLE export_chunks (
    job_id  TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    n       INTEGER NOT NULL,
    body    TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, n)
);
-- 0 chunks: the whole CSV is in `body` (results written before chunks existed).
ALTER TABLE export_results ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE export_results ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0;
