//! Posting a chat message: the one path behind `POST /api/workspaces/{wid}/messages`
//! and the Socket.IO `message:send` event.
//!
//! The input rules live in the parsed types ([`MessageBody`], [`ClientId`]); a
//! transport turns its payload into a [`NewMessage`] and calls [`post`], which checks
//! membership, appends (group commit, `db::message_writer`), publishes
//! `message:new` and answers a typed [`PostError`].

use uuid::Uuid;

use super::membership::{self, AccessError};
use crate::db::StoreError;
use crate::db::messages::{self, Message};
use crate::events::{self, Room, ServerEvent};
use crate::state::AppState;

/// Longest `client_id`, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// A rule a message's input broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The body is empty or only whitespace.
    #[error("must not be empty")]
    EmptyBody,
    /// The body is longer than `REALTIME_MAX_MESSAGE_BYTES`.
    #[error("must be at most {max} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// `client_id` is empty or too long.
    #[error("must be 1 to {MAX_CLIENT_ID_CHARS} characters")]
    ClientIdLength,
}

impl InputError {
    /// The input field the rule is about.
    pub fn field(&self) -> &'static str {
        match self {
            InputError::EmptyBody | InputError::BodyTooLarge { .. } => "body",
            InputError::ClientIdLength => "client_id",
        }
    }
}

/// A message body: not blank, at most the configured number of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

impl MessageBody {
    /// Checks `raw` against the rules; `max_bytes` is `REALTIME_MAX_MESSAGE_BYTES`.
    pub fn parse(raw: String, max_bytes: usize) -> Result<Self, InputError> {
        if raw.len() > max_bytes {
            return Err(InputError::BodyTooLarge { max: max_bytes });
        }
        if raw.trim().is_empty() {
            return Err(InputError::EmptyBody);
        }
        Ok(Self(raw))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The client's own id for a message, which makes a retry idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(String);

impl ClientId {
    /// 1 to [`MAX_CLIENT_ID_CHARS`] characters.
    pub fn parse(raw: String) -> Result<Self, InputError> {
        let n = raw.chars().count();
        if n == 0 || n > MAX_CLIENT_ID_CHARS {
            return Err(InputError::ClientIdLength);
        }
        Ok(Self(raw))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message to post, its input already checked.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The text.
    pub body: MessageBody,
    /// The client's id, if it sent one.
    pub client_id: Option<ClientId>,
}

impl NewMessage {
    /// Parses both fields and reports every rule broken (the body's first).
    pub fn parse(
        body: String,
        client_id: Option<String>,
        max_body_bytes: usize,
    ) -> Result<Self, Vec<InputError>> {
        let body = MessageBody::parse(body, max_body_bytes);
        let client_id = client_id.map(ClientId::parse).transpose();
        match (body, client_id) {
            (Ok(body), Ok(client_id)) => Ok(Self { body, client_id }),
            (body, client_id) => Err(body.err().into_iter().chain(client_id.err()).collect()),
        }
    }
}

/// Whether [`post`] must check that the author is a member of the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Check it (one database read).
    Check,
    /// The caller checked it already: a socket is checked when it joins the
    /// workspace's room, and asking again on every message would add a round trip
    /// to the send path.
    CheckedAtJoin,
}

/// A posted message.
#[derive(Debug, Clone)]
pub struct Posted {
    /// The message as stored, with its `seq`.
    pub message: Message,
    /// `false` when `client_id` matched an earlier message, which is returned instead.
    pub created: bool,
}

/// Why a message was not posted.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// Not a member, or no such workspace.
    #[error("workspace not found")]
    NotFound,
    /// A uniqueness rule other than a `client_id` retry was broken.
    #[error("conflicts with existing data")]
    Conflict,
    /// The database is unreachable (retry) or failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<AccessError> for PostError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::NotFound => PostError::NotFound,
            AccessError::Store(e) => PostError::Store(e),
        }
    }
}

impl From<StoreError> for PostError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => PostError::Conflict,
            e => PostError::Store(e),
        }
    }
}

/// Posts `message` by `author` into `workspace`. After the commit, `message:new` is
/// published to the workspace room (again on a retry: if the first publish was lost
/// with a crash, this one delivers it; sockets drop the duplicate by `seq`).
pub async fn post(
    state: &AppState,
    workspace: Uuid,
    author: Uuid,
    message: NewMessage,
    membership: Membership,
) -> Result<Posted, PostError> {
    if membership == Membership::Check {
        membership::require_member(state, workspace, author).await?;
    }
    let posted = append(state, workspace, author, &message).await?;
    events::publish(
        state,
        Room::Workspace(workspace),
        ServerEvent::MessageNew(posted.message.clone()),
    )
    .await;
    Ok(posted)
}

async fn append(
    state: &AppState,
    workspace: Uuid,
    author: Uuid,
    message: &NewMessage,
) -> Result<Posted, PostError> {
    let client_id = message.client_id.as_ref().map(ClientId::as_str);
    // Insert first and look the earlier message up only when `client_id` collides:
    // retries are rare, so the usual send costs one round trip (PostgreSQL), not two.
    match state
        .message_writer
        .append(workspace, author, message.body.as_str(), client_id)
        .await
    {
        Ok(message) => Ok(Posted {
            message,
            created: true,
        }),
        Err(StoreError::Conflict(e)) => {
            let Some(cid) = client_id else {
                return Err(StoreError::Conflict(e).into());
            };
            match messages::find_by_client_id(state.db.pool(), workspace, author, cid).await? {
                Some(existing) => Ok(Posted {
                    message: existing,
                    created: false,
                }),
                // The unique rule that failed was not the client_id's.
                None => Err(StoreError::Conflict(e).into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_not_blank_and_fits_the_limit() {
        assert_eq!(
            MessageBody::parse("  \n".into(), 10),
            Err(InputError::EmptyBody)
        );
        assert_eq!(
            MessageBody::parse("x".repeat(11), 10),
            Err(InputError::BodyTooLarge { max: 10 })
        );
        assert_eq!(
            MessageBody::parse("x".repeat(10), 10)
                .unwrap()
                .as_str()
                .len(),
            10
        );
    }

    #[test]
    fn a_client_id_has_1_to_64_characters() {
        assert_eq!(
            ClientId::parse(String::new()),
            Err(InputError::ClientIdLength)
        );
        assert_eq!(
            ClientId::parse("é".repeat(65)),
            Err(InputError::ClientIdLength)
        );
        assert!(ClientId::parse("é".repeat(64)).is_ok());
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let errors = NewMessage::parse(" ".into(), Some(String::new()), 10).unwrap_err();
        assert_eq!(
            errors,
            vec![InputError::EmptyBody, InputError::ClientIdLength]
        );
        assert_eq!(errors[1].field(), "client_id");
    }
}
