//! Whether a user may act in a workspace. A non-member and an unknown workspace get
//! the same answer ([`AccessError::NotFound`]), so workspace ids do not leak.

use uuid::Uuid;

use crate::db::StoreError;
use crate::db::workspaces::{self, Role};
use crate::state::AppState;

/// Why a user may not act in a workspace.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Not a member, or no such workspace.
    #[error("workspace not found")]
    NotFound,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `user`'s role in `workspace`, or [`AccessError::NotFound`].
pub async fn require_member(
    state: &AppState,
    workspace: Uuid,
    user: Uuid,
) -> Result<Role, AccessError> {
    workspaces::role_of(state.db.pool(), workspace, user)
        .await?
        .ok_or(AccessError::NotFound)
}
