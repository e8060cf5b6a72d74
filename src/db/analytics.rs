//! Analytics events and the durable opt-out list of embedded mode.

use sqlx::{Any, Executor};
use uuid::Uuid;

use super::StoreError;
use crate::clock;

/// Records one event.
pub async fn insert_event<'e>(
    ex: impl Executor<'e, Database = Any>,
    user: Uuid,
    name: &str,
    properties: &serde_json::Value,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    crate::db::query(
        "INSERT INTO analytics_events (id, user_id, name, properties, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id.to_string())
    .bind(user.to_string())
    .bind(name)
    .bind(properties.to_string())
    .bind(clock::now_micros())
    .execute(ex)
    .await?;
    Ok(id)
}
