-- Sessions whose Redis copy could not be written or deleted (Redis down): the
-- database row is the truth; every instance brings Redis back in line from this list
-- before it trusts Redis again (src/session/durable.rs).
CREATE TABLE session_repairs (
    key        TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
