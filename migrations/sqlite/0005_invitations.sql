-- Memberships by invitation (docs/api.md, "Members and invitations"). An owner
-- invites an e-mail address; whoever holds an account with that address sees the
-- invitation and accepts or declines it. One pending invitation per address and
-- workspace.
CREATE TABLE invitations (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    role         TEXT NOT NULL,
    invited_by   TEXT NOT NULL,
    -- pending, accepted, declined, revoked
    status       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    answered_at  BIGINT
);
CREATE UNIQUE INDEX invitations_pending ON invitations (workspace_id, email)
    WHERE status = 'pending';
CREATE INDEX invitations_pending_by_email ON invitations (email)
    WHERE status = 'pending';
