//! What the realtime events answer (acks) and the events the transport itself
//! emits, as types: the handlers build them, and the OpenAPI document carries their
//! schemas (with [`crate::events::ServerEvent`]) so that clients generate their
//! types from the same source as the REST ones (clients/js).

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// The ack of `workspace:join`; the replayed `message:new` events come before it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinAck {
    /// The workspace joined.
    pub workspace_id: Uuid,
    /// False when more was missed than is replayed (or `since_seq` is beyond the
    /// newest message): reload the history over REST; delivery goes on after
    /// `last_seq`.
    pub recovered: bool,
    /// How many messages were replayed before this ack.
    pub replayed: u32,
    /// The `seq` delivery continues after.
    pub last_seq: i64,
    /// The most messages a join replays.
    pub replay_limit: u32,
}

/// The ack of `message:send`, once the message is committed (the original message's
/// for a retry with the same `client_id`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SendAck {
    /// The message.
    pub id: Uuid,
    /// Its position in the workspace's chat.
    pub seq: i64,
}

/// The ack of `workspace:leave`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaveAck {
    /// The workspace left.
    pub workspace_id: Uuid,
}

/// One user online in a workspace.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnlineUser {
    /// The user.
    pub user_id: Uuid,
}

/// The ack of `presence:list`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresenceList {
    /// The workspace.
    pub workspace_id: Uuid,
    /// Who is online in it, on any instance.
    pub users: Vec<OnlineUser>,
}

/// The ack of `auth:renew`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RenewAck {
    /// When the connection now expires (RFC 3339).
    pub expires_at: String,
}

/// `resync`: a joined workspace missed more than is repaired; reload its history
/// over REST, delivery goes on after `last_seq`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resync {
    /// The workspace.
    pub workspace_id: Uuid,
    /// The `seq` delivery continues after.
    pub last_seq: i64,
}

/// `closing`: the server is about to disconnect this socket, and why
/// (`ignored_rate_limit`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Closing {
    /// Why.
    pub reason: String,
}
