-- Shoal schema, PostgreSQL flavour. Keep in step with ../sqlite/0001_init.sql: the
-- columns and indexes are the same; only types differ (BLOB/BYTEA).
-- Ids are UUIDv7 strings (time-ordered, so ORDER BY id is creation order);
-- times are microseconds since the Unix epoch (BIGINT), portable and sortable.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE workspaces (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    created_by       TEXT NOT NULL REFERENCES users(id),
    last_message_seq BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL
);

CREATE TABLE members (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, workspace_id);

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    title        TEXT NOT NULL,
    description  TEXT,
    status       TEXT NOT NULL,
    assignee_id  TEXT REFERENCES users(id) ON DELETE SET NULL,
    version      BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX tasks_by_workspace ON tasks (workspace_id, id);
CREATE INDEX tasks_by_status ON tasks (workspace_id, status, id);
CREATE INDEX tasks_by_assignee ON tasks (workspace_id, assignee_id, id);

-- No foreign key to tasks: the activity of a deleted task outlives it.
CREATE TABLE activity (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    actor_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    task_id      TEXT,
    data         TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX activity_by_workspace ON activity (workspace_id, id);

CREATE TABLE messages (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    body         TEXT NOT NULL,
    client_id    TEXT,
    seq          BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (workspace_id, seq)
);
-- A client that retries a send with the same client_id gets the first message back.
CREATE UNIQUE INDEX messages_client_id ON messages (workspace_id, user_id, client_id)
    WHERE client_id IS NOT NULL;

CREATE TABLE refresh_families (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_key TEXT NOT NULL,
    revoked_at  BIGINT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE refresh_tokens (
    jti        TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL REFERENCES refresh_families(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);

CREATE TABLE sessions (
    key        TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE analytics_opt_outs (
    user_id    TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE analytics_events (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    properties TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
