//! The server → client events, the rooms they go to, and [`publish`]: the ONE path
//! by which anything (a use-case, an HTTP handler, a socket handler, a job) sends a
//! realtime event, whichever instance it runs on. Delivering them to sockets is the
//! realtime transport's job ([`crate::realtime`]); producing them needs no transport.
//!
//! An event is wrapped in an [`Envelope`] (room, optional socket to skip, event) and
//! published once on its room's [`PubSub`](crate::pubsub::PubSub) channel
//! ([`channel_of`]); the hub of every instance with sockets in that room
//! (`realtime::hub`, subscribed through `realtime::channels`) hands it to them. An
//! instance without a socket in the room never receives it.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::messages::Message;
use crate::db::tasks::Task;
use crate::state::AppState;

/// The pub/sub channel of a room's events, `rt:{room}` (the Redis backend prefixes
/// it with `REDIS_KEY_PREFIX`).
pub fn channel_of(room: &str) -> String {
    format!("rt:{room}")
}

/// A Socket.IO room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Room {
    /// `workspace:{id}`: sockets that joined the workspace after a membership check.
    Workspace(Uuid),
    /// `user:{id}`: every socket of one user, joined at connect.
    User(Uuid),
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Room::Workspace(id) => write!(f, "workspace:{id}"),
            Room::User(id) => write!(f, "user:{id}"),
        }
    }
}

/// `task:deleted` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskDeleted {
    /// The deleted task.
    pub id: Uuid,
    /// Its workspace.
    pub workspace_id: Uuid,
}

/// `notification` data: something happened that concerns this user personally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    /// UUIDv7, so clients can de-duplicate.
    pub id: Uuid,
    /// What happened: `task.assigned`.
    pub kind: String,
    /// Where.
    pub workspace_id: Uuid,
    /// The task concerned.
    pub task_id: Option<Uuid>,
    /// Who did it.
    pub actor_id: Uuid,
    /// A short human summary (the task title).
    pub title: String,
    /// RFC 3339.
    pub created_at: String,
}

/// `presence:update` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PresenceUpdate {
    /// The workspace.
    pub workspace_id: Uuid,
    /// Who came or went.
    pub user_id: Uuid,
    /// Whether the user still has at least one connection in the workspace.
    pub online: bool,
}

/// `job:completed` data: a job the user asked for reached its end (sent to
/// `user:{id}` of the requester).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobCompleted {
    /// The job (`GET /api/jobs/{id}`).
    pub id: Uuid,
    /// Its type (`export.workspace_csv`).
    #[serde(rename = "type")]
    pub r#type: String,
    /// `succeeded` or `dead`.
    pub status: String,
    /// The workspace it belongs to, if any.
    pub workspace_id: Option<Uuid>,
}

/// `session:ended` data: the login a socket authenticated with ended (a logout, or a
/// refresh token used twice). Sent to `user:{id}`; each instance closes the sockets of
/// that login after telling them why, and leaves the user's other logins alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionEnded {
    /// The login (refresh family) that ended.
    pub family_id: Uuid,
    /// `logout` or `refresh_token_reused` (sent by the hub), `token_expired` or
    /// `session_expired` (sent by src/realtime/expiry.rs).
    pub reason: String,
}

/// `member:removed` data: a member left or was removed. Sent to the workspace; each
/// instance then takes that user's sockets out of the workspace's room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberRemoved {
    /// The workspace.
    pub workspace_id: Uuid,
    /// Who is no longer a member.
    pub user_id: Uuid,
    /// Who removed them (the user themself when they left).
    pub actor_id: Uuid,
}

/// `member:added` and `member:updated` data: someone joined the workspace (an
/// invitation accepted, or an owner added them) or their role changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberChanged {
    /// The workspace.
    pub workspace_id: Uuid,
    /// The member.
    pub user_id: Uuid,
    /// Their role now: `owner`, `admin` or `member`.
    pub role: String,
    /// Who did it (the member themself when they accepted an invitation).
    pub actor_id: Uuid,
}

/// `invitation:received` (to `user:{id}` of the invited address's account) and
/// `invitation:answered` (to the workspace) data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvitationChanged {
    /// The invitation (`GET /api/invitations`).
    pub id: Uuid,
    /// The workspace.
    pub workspace_id: Uuid,
    /// `pending`, `accepted` or `declined`.
    pub status: String,
}

/// `typing` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Typing {
    /// The workspace.
    pub workspace_id: Uuid,
    /// Who is typing.
    pub user_id: Uuid,
}

/// Every server → client event (docs/realtime.md), named as on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "event", content = "data")]
pub enum ServerEvent {
    /// A chat message was committed (at-least-once, resumable by `seq`).
    #[serde(rename = "message:new")]
    MessageNew(Message),
    /// A task was created over HTTP.
    #[serde(rename = "task:created")]
    TaskCreated(Task),
    /// A task was changed.
    #[serde(rename = "task:updated")]
    TaskUpdated(Task),
    /// A task was deleted.
    #[serde(rename = "task:deleted")]
    TaskDeleted(TaskDeleted),
    /// Sent to `user:{id}`.
    #[serde(rename = "notification")]
    Notification(Notification),
    /// Someone came online in, or left, a workspace (ephemeral).
    #[serde(rename = "presence:update")]
    PresenceUpdate(PresenceUpdate),
    /// Someone is typing (ephemeral, never stored).
    #[serde(rename = "typing")]
    Typing(Typing),
    /// Sent to `user:{id}` of the requester when a job succeeded or died.
    #[serde(rename = "job:completed")]
    JobCompleted(JobCompleted),
    /// Sent to `user:{id}`: one of the user's logins ended; its sockets are closed.
    #[serde(rename = "session:ended")]
    SessionEnded(SessionEnded),
    /// Sent to the workspace: a member left or was removed; their sockets leave it.
    #[serde(rename = "member:removed")]
    MemberRemoved(MemberRemoved),
    /// Sent to the workspace: someone became a member.
    #[serde(rename = "member:added")]
    MemberAdded(MemberChanged),
    /// Sent to the workspace: a member's role changed.
    #[serde(rename = "member:updated")]
    MemberUpdated(MemberChanged),
    /// Sent to `user:{id}`: an invitation to the user's address.
    #[serde(rename = "invitation:received")]
    InvitationReceived(InvitationChanged),
    /// Sent to the workspace: an invitation was accepted or declined.
    #[serde(rename = "invitation:answered")]
    InvitationAnswered(InvitationChanged),
}

impl ServerEvent {
    /// The Socket.IO event name.
    pub fn name(&self) -> &'static str {
        match self {
            ServerEvent::MessageNew(_) => "message:new",
            ServerEvent::TaskCreated(_) => "task:created",
            ServerEvent::TaskUpdated(_) => "task:updated",
            ServerEvent::TaskDeleted(_) => "task:deleted",
            ServerEvent::Notification(_) => "notification",
            ServerEvent::PresenceUpdate(_) => "presence:update",
            ServerEvent::Typing(_) => "typing",
            ServerEvent::JobCompleted(_) => "job:completed",
            ServerEvent::SessionEnded(_) => "session:ended",
            ServerEvent::MemberRemoved(_) => "member:removed",
            ServerEvent::MemberAdded(_) => "member:added",
            ServerEvent::MemberUpdated(_) => "member:updated",
            ServerEvent::InvitationReceived(_) => "invitation:received",
            ServerEvent::InvitationAnswered(_) => "invitation:answered",
        }
    }
}

/// What travels on a room's channel ([`channel_of`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// `workspace:{id}` or `user:{id}`.
    pub room: String,
    /// A socket id (of the instance `origin`) that must not receive it: the typist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<String>,
    /// The event.
    pub event: ServerEvent,
}

/// Publishes `event` to `room` on every instance. Best effort by design: a failure is
/// logged, not returned, because the caller's change is already committed; messages
/// are recovered from the database by `seq` (see `docs/realtime.md`).
pub async fn publish(state: &AppState, room: Room, event: ServerEvent) {
    publish_except(state, room, None, event).await;
}

/// [`publish`], skipping the socket `except` (the sender of a `typing`).
pub async fn publish_except(
    state: &AppState,
    room: Room,
    except: Option<String>,
    event: ServerEvent,
) {
    let envelope = Envelope {
        room: room.to_string(),
        except,
        event,
    };
    let payload = match serde_json::to_vec(&envelope) {
        Ok(p) => Bytes::from(p),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a realtime event");
            return;
        }
    };
    let started = std::time::Instant::now();
    let published = state
        .pubsub
        .publish(&channel_of(&envelope.room), payload)
        .await;
    metrics::histogram!("shoal_realtime_publish_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = published {
        metrics::counter!("shoal_realtime_publish_failures_total").increment(1);
        tracing::warn!(error = %e, room = %envelope.room, event = envelope.event.name(), "realtime publish failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_with_wire_names() {
        let event = ServerEvent::Typing(Typing {
            workspace_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
        });
        let envelope = Envelope {
            room: "workspace:x".into(),
            except: Some("abc".into()),
            event,
        };
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(json["event"]["event"], "typing");
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, envelope);
    }

    #[test]
    fn rooms_are_named_as_documented() {
        let id = Uuid::nil();
        assert_eq!(Room::Workspace(id).to_string(), format!("workspace:{id}"));
        assert_eq!(Room::User(id).to_string(), format!("user:{id}"));
        assert_eq!(
            channel_of(&Room::Workspace(id).to_string()),
            format!("rt:workspace:{id}")
        );
    }
}
