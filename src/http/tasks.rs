//! Tasks and the activity feed. Every create/update/delete writes its activity row
//! in the same transaction as the change; updates and deletes are guarded by the
//! task's `version` (body field or `If-Match`) and answer 409 on a stale one.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::caller::Auth;
use super::error::{ApiError, ApiResult, FieldError};
use super::json::{Checks, Json, Path, Query, Validate};
use super::workspaces::{Page, require_member};
use crate::clock;
use crate::db::activity::{self, Activity};
use crate::db::tasks::{self, Filter, Status, Task, TaskFields};
use crate::db::{StoreError, cursor, workspaces};
use crate::events::{self, Room, ServerEvent};
use crate::events::{Notification, TaskDeleted};
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks, create_task))
        .routes(routes!(get_task, patch_task, delete_task))
        .routes(routes!(list_activity))
}

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

fn page_limit(limit: Option<u32>) -> ApiResult<u32> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        )),
    }
}

fn parse_cursor(cursor: Option<&str>) -> ApiResult<Option<Uuid>> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            cursor::decode(c)
                .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor from this API"))
        })
        .transpose()
}

fn next_cursor<T>(items: &[T], limit: u32, id: impl Fn(&T) -> Uuid) -> Option<String> {
    (items.len() == limit as usize)
        .then(|| items.last().map(|last| cursor::encode(id(last))))
        .flatten()
}

/// Filters and paging of the task list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct TaskQuery {
    /// `todo`, `in_progress` or `done`.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Only tasks assigned to this user.
    assignee_id: Option<Uuid>,
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^([A-Za-z0-9_-]{21}[AQgw])?$")]
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/workspaces/{wid}/tasks", tag = "tasks",
    params(("wid" = Uuid, Path, description = "workspace id"), TaskQuery),
    responses((status = 200, body = Page<Task>, description = "newest first"), (status = 404), (status = 422)))]
async fn list_tasks(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(wid): Path<Uuid>,
    Query(q): Query<TaskQuery>,
) -> ApiResult<Json<Page<Task>>> {
    require_member(&state, wid, me.user_id).await?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            Status::parse(s)
                .ok_or_else(|| ApiError::invalid("status", "must be todo, in_progress or done"))
        })
        .transpose()?;
    let limit = page_limit(q.limit)?;
    let filter = Filter {
        status,
        assignee: q.assignee_id,
        before: parse_cursor(q.cursor.as_deref())?,
    };
    let items = tasks::list(state.db.pool(), wid, &filter, limit).await?;
    let next_cursor = next_cursor(&items, limit, |t| t.id);
    Ok(Json(Page { items, next_cursor }))
}

/// A new task.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTask {
    /// 1 to 200 characters, not blank.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    title: String,
    /// Up to 10,000 characters.
    #[schema(max_length = 10000)]
    description: Option<String>,
    /// Default `todo`.
    status: Option<Status>,
    /// A member of the workspace.
    #[schema(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    assignee_id: Option<Uuid>,
}

impl Validate for CreateTask {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        checks.text(&self.title, "title", 1, 200);
        if let Some(d) = &self.description {
            checks.text(d, "description", 0, 10_000);
        }
        checks.finish()
    }
}

async fn require_assignee(state: &AppState, wid: Uuid, assignee: Option<Uuid>) -> ApiResult<()> {
    if let Some(a) = assignee
        && workspaces::role_of(state.db.pool(), wid, a)
            .await?
            .is_none()
    {
        // 409, not 422: the id is well-formed; it names nobody in this workspace now.
        return Err(ApiError::Conflict {
            code: "assignee_not_member",
            message: "assignee_id: not a member of the workspace".into(),
        });
    }
    Ok(())
}

fn with_etag(task: Task, status: StatusCode) -> Response {
    let etag = format!("\"{}\"", task.version);
    let mut response = (status, Json(task)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

#[utoipa::path(post, path = "/api/workspaces/{wid}/tasks", tag = "tasks", request_body = CreateTask,
    params(("wid" = Uuid, Path, description = "workspace id")),
    responses((status = 201, body = Task), (status = 404), (status = 409, description = "`assignee_not_member`"), (status = 422)))]
async fn create_task(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(wid): Path<Uuid>,
    Json(req): Json<CreateTask>,
) -> ApiResult<Response> {
    require_member(&state, wid, me.user_id).await?;
    require_assignee(&state, wid, req.assignee_id).await?;
    let fields = TaskFields {
        title: req.title.trim().to_owned(),
        description: req.description,
        status: req.status.unwrap_or(Status::Todo),
        assignee_id: req.assignee_id,
    };
    let mut tx = state.db.begin().await?;
    let task = tasks::insert(&mut tx, wid, me.user_id, &fields).await?;
    activity::record(
        &mut tx,
        wid,
        me.user_id,
        "task.created",
        Some(task.id),
        &json!({ "title": task.title, "status": task.status, "assignee_id": task.assignee_id }),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    events::publish(
        &state,
        Room::Workspace(wid),
        ServerEvent::TaskCreated(task.clone()),
    )
    .await;
    notify_assignee(&state, &task, None, me.user_id).await;
    Ok(with_etag(task, StatusCode::CREATED))
}

#[utoipa::path(get, path = "/api/workspaces/{wid}/tasks/{id}", tag = "tasks",
    params(("wid" = Uuid, Path, description = "workspace id"), ("id" = Uuid, Path, description = "task id")),
    responses((status = 200, body = Task, description = "ETag is the version"), (status = 404)))]
async fn get_task(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((wid, id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    require_member(&state, wid, me.user_id).await?;
    let task = tasks::get(state.db.pool(), wid, id)
        .await?
        .ok_or(ApiError::NotFound("task"))?;
    Ok(with_etag(task, StatusCode::OK))
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Changes to a task; absent fields stay as they are, `null` clears.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PatchTask {
    /// The version the change is based on (or send `If-Match`).
    #[schema(value_type = i64, required = true, minimum = 1)]
    version: Option<i64>,
    /// 1 to 200 characters, not blank.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    title: Option<String>,
    /// `null` clears; up to 10,000 characters.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    description: Option<Option<String>>,
    /// New status.
    status: Option<Status>,
    /// `null` unassigns.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    assignee_id: Option<Option<Uuid>>,
}

impl Validate for PatchTask {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        if let Some(t) = &self.title {
            checks.text(t, "title", 1, 200);
        }
        if let Some(Some(d)) = &self.description {
            checks.text(d, "description", 0, 10_000);
        }
        checks.check(
            self.version.is_none_or(|v| v >= 1),
            "version",
            "must be at least 1",
        );
        checks.finish()
    }
}

/// The expected version from `If-Match: "3"` (or `W/"3"`, or `3`).
fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|s| s.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::invalid("If-Match", "must be the task version, e.g. \"3\""))
}

fn stale(current: i64) -> ApiError {
    ApiError::Conflict {
        code: "version_conflict",
        message: format!("the task changed meanwhile; current version is {current}"),
    }
}

/// Changes a task that is still at `version`. (`If-Match: "<version>"` may replace the
/// body's `version`; it is not in this document because OpenAPI cannot say "the
/// header or the field", and a schema that allowed neither would be wrong.)
#[utoipa::path(patch, path = "/api/workspaces/{wid}/tasks/{id}", tag = "tasks", request_body = PatchTask,
    params(("wid" = Uuid, Path, description = "workspace id"), ("id" = Uuid, Path, description = "task id")),
    responses((status = 200, body = Task), (status = 404), (status = 409, description = "stale version, or `assignee_not_member`"), (status = 422)))]
async fn patch_task(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((wid, id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
    Json(req): Json<PatchTask>,
) -> ApiResult<Response> {
    require_member(&state, wid, me.user_id).await?;
    let expected = match (req.version, if_match(&headers)?) {
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => {
            return Err(ApiError::invalid(
                "version",
                "is required (or send If-Match)",
            ));
        }
    };
    if let Some(Some(a)) = req.assignee_id {
        require_assignee(&state, wid, Some(a)).await?;
    }

    let mut tx = state.db.begin().await?;
    let current = tasks::get(&mut *tx, wid, id)
        .await?
        .ok_or(ApiError::NotFound("task"))?;
    if current.version != expected {
        return Err(stale(current.version));
    }
    let fields = TaskFields {
        title: req
            .title
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|| current.title.clone()),
        description: req
            .description
            .unwrap_or_else(|| current.description.clone()),
        status: req.status.unwrap_or(current.status),
        assignee_id: req.assignee_id.unwrap_or(current.assignee_id),
    };
    let mut changes = serde_json::Map::new();
    let mut diff = |name: &str, from: serde_json::Value, to: serde_json::Value| {
        if from != to {
            changes.insert(name.to_owned(), json!({ "from": from, "to": to }));
        }
    };
    diff("title", json!(current.title), json!(fields.title));
    diff(
        "description",
        json!(current.description),
        json!(fields.description),
    );
    diff("status", json!(current.status), json!(fields.status));
    diff(
        "assignee_id",
        json!(current.assignee_id),
        json!(fields.assignee_id),
    );

    let task = tasks::update(&mut tx, wid, id, expected, &fields)
        .await?
        .ok_or_else(|| stale(expected + 1))?;
    activity::record(
        &mut tx,
        wid,
        me.user_id,
        "task.updated",
        Some(id),
        &json!({ "changes": changes }),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    events::publish(
        &state,
        Room::Workspace(wid),
        ServerEvent::TaskUpdated(task.clone()),
    )
    .await;
    notify_assignee(&state, &task, current.assignee_id, me.user_id).await;
    Ok(with_etag(task, StatusCode::OK))
}

/// Optional version guard of a delete.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DeleteQuery {
    /// Delete only if the task is still at this version (or send `If-Match`).
    #[param(minimum = 1)]
    version: Option<i64>,
}

#[utoipa::path(delete, path = "/api/workspaces/{wid}/tasks/{id}", tag = "tasks",
    params(("wid" = Uuid, Path, description = "workspace id"), ("id" = Uuid, Path, description = "task id"), DeleteQuery),
    responses((status = 204), (status = 404), (status = 409, description = "stale version")))]
async fn delete_task(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((wid, id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    require_member(&state, wid, me.user_id).await?;
    let expected = match q.version {
        Some(v) => Some(v),
        None => if_match(&headers)?,
    };
    let mut tx = state.db.begin().await?;
    let Some(task) = tasks::delete(&mut tx, wid, id, expected).await? else {
        return match tasks::get(&mut *tx, wid, id).await? {
            Some(current) => Err(stale(current.version)),
            None => Err(ApiError::NotFound("task")),
        };
    };
    activity::record(
        &mut tx,
        wid,
        me.user_id,
        "task.deleted",
        Some(id),
        &json!({ "title": task.title }),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    let deleted = TaskDeleted {
        id,
        workspace_id: wid,
    };
    events::publish(
        &state,
        Room::Workspace(wid),
        ServerEvent::TaskDeleted(deleted),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// After a commit: tells a newly assigned user (other than the actor) in its
/// `user:{id}` room.
async fn notify_assignee(state: &AppState, task: &Task, previous: Option<Uuid>, actor: Uuid) {
    let Some(assignee) = task.assignee_id else {
        return;
    };
    if assignee == actor || previous == Some(assignee) {
        return;
    }
    let notification = Notification {
        id: Uuid::now_v7(),
        kind: "task.assigned".into(),
        workspace_id: task.workspace_id,
        task_id: Some(task.id),
        actor_id: actor,
        title: task.title.clone(),
        created_at: clock::rfc3339(clock::now_micros()),
    };
    events::publish(
        state,
        Room::User(assignee),
        ServerEvent::Notification(notification),
    )
    .await;
}

/// Paging of the activity feed.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ActivityQuery {
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^([A-Za-z0-9_-]{21}[AQgw])?$")]
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/workspaces/{wid}/activity", tag = "tasks",
    params(("wid" = Uuid, Path, description = "workspace id"), ActivityQuery),
    responses((status = 200, body = Page<Activity>, description = "newest first"), (status = 404)))]
async fn list_activity(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(wid): Path<Uuid>,
    Query(q): Query<ActivityQuery>,
) -> ApiResult<Json<Page<Activity>>> {
    require_member(&state, wid, me.user_id).await?;
    let limit = page_limit(q.limit)?;
    let before = parse_cursor(q.cursor.as_deref())?;
    let items = activity::list(state.db.pool(), wid, before, limit).await?;
    let next_cursor = next_cursor(&items, limit, |a| a.id);
    Ok(Json(Page { items, next_cursor }))
}
