//! Tasks, optimistic concurrency, and the activity feed (docs/api.md).

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_error, assert_invalid, header, spawn_app};

fn tasks_path(wid: &str) -> String {
    format!("/api/workspaces/{wid}/tasks")
}

fn task_path(wid: &str, id: &str) -> String {
    format!("/api/workspaces/{wid}/tasks/{id}")
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(id_of)
        .collect()
}

async fn owner_with_workspace(app: &TestApp) -> (TestUser, String) {
    let user = app.signed_up_user().await;
    let wid = app.workspace_id(&user).await;
    (user, wid)
}

#[tokio::test(flavor = "multi_thread")]
async fn create_task_is_201_at_version_1_status_todo_with_an_etag() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;

    let response = app
        .post(
            &user,
            &tasks_path(&wid),
            &json!({ "title": "Write tests", "description": "all of them" }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(response.headers(), "etag"), "\"1\"");
    let task: Value = response.json().await.expect("task");
    assert_eq!(task["title"], "Write tests");
    assert_eq!(task["description"], "all of them");
    assert_eq!(task["status"], "todo");
    assert_eq!(task["version"], 1);
    assert_eq!(task["workspace_id"], wid.as_str());
    assert!(task["assignee_id"].is_null());
    assert!(task["created_at"].is_string() && task["updated_at"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn create_task_with_a_status_and_an_assignee_who_is_a_member() {
    let app = spawn_app().await;
    let (owner, wid) = owner_with_workspace(&app).await;
    let bob = app.signed_up_user().await;
    app.add_member(&owner, &wid, &bob).await;

    let task = app
        .create_task(
            &owner,
            &wid,
            &json!({ "title": "Ship", "status": "in_progress", "assignee_id": bob.id }),
        )
        .await;

    assert_eq!(task["status"], "in_progress");
    assert_eq!(task["assignee_id"], bob.id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn create_task_with_an_empty_title_is_422() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;

    let response = app
        .post(&user, &tasks_path(&wid), &json!({ "title": "" }))
        .await;

    assert_invalid(response, "title").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn create_task_with_an_unknown_status_is_422() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;

    let response = app
        .post(
            &user,
            &tasks_path(&wid),
            &json!({ "title": "x", "status": "blocked" }),
        )
        .await;

    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn create_task_assigned_to_a_non_member_is_409() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let outsider = app.signed_up_user().await;

    let response = app
        .post(
            &user,
            &tasks_path(&wid),
            &json!({ "title": "x", "assignee_id": outsider.id }),
        )
        .await;

    assert_error(response, StatusCode::CONFLICT, "assignee_not_member").await;
    let page: Value = app
        .get(&user, &tasks_path(&wid))
        .await
        .json()
        .await
        .expect("page");
    assert!(
        page["items"].as_array().expect("items").is_empty(),
        "nothing created"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_by_status_and_by_assignee() {
    let app = spawn_app().await;
    let (owner, wid) = owner_with_workspace(&app).await;
    let bob = app.signed_up_user().await;
    app.add_member(&owner, &wid, &bob).await;
    let todo = app
        .create_task(&owner, &wid, &json!({ "title": "a" }))
        .await;
    let done = app
        .create_task(
            &owner,
            &wid,
            &json!({ "title": "b", "status": "done", "assignee_id": bob.id }),
        )
        .await;
    let bobs_todo = app
        .create_task(
            &owner,
            &wid,
            &json!({ "title": "c", "assignee_id": bob.id }),
        )
        .await;

    let by_status: Value = app
        .get(&owner, &format!("{}?status=todo", tasks_path(&wid)))
        .await
        .json()
        .await
        .expect("page");
    let by_assignee: Value = app
        .get(
            &owner,
            &format!("{}?assignee_id={}", tasks_path(&wid), bob.id),
        )
        .await
        .json()
        .await
        .expect("page");
    let both: Value = app
        .get(
            &owner,
            &format!("{}?status=done&assignee_id={}", tasks_path(&wid), bob.id),
        )
        .await
        .json()
        .await
        .expect("page");

    // Newest first.
    assert_eq!(ids(&by_status), vec![id_of(&bobs_todo), id_of(&todo)]);
    assert_eq!(ids(&by_assignee), vec![id_of(&bobs_todo), id_of(&done)]);
    assert_eq!(ids(&both), vec![id_of(&done)]);
    assert!(by_status["next_cursor"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn list_with_a_bad_status_filter_is_422() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;

    let response = app
        .get(&user, &format!("{}?status=nope", tasks_path(&wid)))
        .await;

    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_pagination_visits_every_task_once() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let t = app
            .create_task(&user, &wid, &json!({ "title": format!("task {i}") }))
            .await;
        created.push(id_of(&t));
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("{}?limit=2", tasks_path(&wid));
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let response = app.get(&user, &path).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page: Value = response.json().await.expect("page");
        let items = ids(&page);
        assert!(items.len() <= 2);
        seen.extend(items);
        pages += 1;
        assert!(pages <= 5, "pagination terminates");
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }

    assert_eq!(pages, 3);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
    created.reverse();
    assert_eq!(seen, created, "all tasks, newest first");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_garbage_cursor_is_422() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;

    let response = app
        .get(&user, &format!("{}?cursor=!!garbage!!", tasks_path(&wid)))
        .await;

    assert_invalid(response, "cursor").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_outside_1_to_100_is_422() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;

    for limit in ["0", "101", "-1", "many"] {
        let response = app
            .get(&user, &format!("{}?limit={limit}", tasks_path(&wid)))
            .await;
        assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    let ok = app
        .get(&user, &format!("{}?limit=100", tasks_path(&wid)))
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_one_task_returns_it_with_its_etag() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let task = app
        .create_task(&user, &wid, &json!({ "title": "read me" }))
        .await;

    let response = app.get(&user, &task_path(&wid, &id_of(&task))).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "etag"), "\"1\"");
    let fetched: Value = response.json().await.expect("task");
    assert_eq!(fetched, task);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_of_another_workspace_is_404_through_your_own_workspace() {
    let app = spawn_app().await;
    let (alice, alice_ws) = owner_with_workspace(&app).await;
    let (bob, bob_ws) = owner_with_workspace(&app).await;
    let bobs_task = app
        .create_task(&bob, &bob_ws, &json!({ "title": "bob's" }))
        .await;
    let tid = id_of(&bobs_task);

    let get = app.get(&alice, &task_path(&alice_ws, &tid)).await;
    assert_error(get, StatusCode::NOT_FOUND, "not_found").await;
    let patch = app
        .patch(
            &alice,
            &task_path(&alice_ws, &tid),
            &json!({ "version": 1, "title": "mine" }),
        )
        .await;
    assert_error(patch, StatusCode::NOT_FOUND, "not_found").await;
    let delete = app.delete(&alice, &task_path(&alice_ws, &tid)).await;
    assert_error(delete, StatusCode::NOT_FOUND, "not_found").await;

    let still: Value = app
        .get(&bob, &task_path(&bob_ws, &tid))
        .await
        .json()
        .await
        .expect("task");
    assert_eq!(still["title"], "bob's");
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_with_the_current_version_is_200_and_bumps_the_version() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let task = app
        .create_task(&user, &wid, &json!({ "title": "draft" }))
        .await;

    let response = app
        .patch(
            &user,
            &task_path(&wid, &id_of(&task)),
            &json!({ "version": 1, "title": "final", "status": "done" }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "etag"), "\"2\"");
    let patched: Value = response.json().await.expect("task");
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["title"], "final");
    assert_eq!(patched["status"], "done");
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_with_a_stale_version_is_409_version_conflict() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let task = app
        .create_task(&user, &wid, &json!({ "title": "draft" }))
        .await;
    let path = task_path(&wid, &id_of(&task));
    let first = app
        .patch(&user, &path, &json!({ "version": 1, "title": "one" }))
        .await;
    assert_eq!(first.status(), StatusCode::OK);

    let stale = app
        .patch(&user, &path, &json!({ "version": 1, "title": "two" }))
        .await;

    assert_error(stale, StatusCode::CONFLICT, "version_conflict").await;
    let current: Value = app.get(&user, &path).await.json().await.expect("task");
    assert_eq!(current["title"], "one");
    assert_eq!(current["version"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_with_if_match_instead_of_a_body_version() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let task = app
        .create_task(&user, &wid, &json!({ "title": "draft" }))
        .await;
    let path = task_path(&wid, &id_of(&task));
    app.patch(
        &user,
        &path,
        &json!({ "version": 1, "status": "in_progress" }),
    )
    .await;

    let response = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&user.access_token)
        .header("if-match", "\"2\"")
        .json(&json!({ "status": "done" }))
        .send()
        .await
        .expect("PATCH");

    assert_eq!(response.status(), StatusCode::OK);
    let patched: Value = response.json().await.expect("task");
    assert_eq!(patched["version"], 3);
    assert_eq!(patched["status"], "done");
    let stale = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&user.access_token)
        .header("if-match", "\"2\"")
        .json(&json!({ "status": "todo" }))
        .send()
        .await
        .expect("PATCH");
    assert_error(stale, StatusCode::CONFLICT, "version_conflict").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_without_version_or_if_match_is_422() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let task = app
        .create_task(&user, &wid, &json!({ "title": "draft" }))
        .await;

    let response = app
        .patch(
            &user,
            &task_path(&wid, &id_of(&task)),
            &json!({ "title": "no version" }),
        )
        .await;

    assert_invalid(response, "version").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_description_null_clears_it_and_absent_fields_stay() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let task = app
        .create_task(
            &user,
            &wid,
            &json!({ "title": "keep", "description": "remove me" }),
        )
        .await;

    let response = app
        .patch(
            &user,
            &task_path(&wid, &id_of(&task)),
            &json!({ "version": 1, "description": null }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let patched: Value = response.json().await.expect("task");
    assert!(patched["description"].is_null());
    assert_eq!(patched["title"], "keep");
    assert_eq!(patched["status"], "todo");
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_assigning_a_non_member_is_409() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let outsider = app.signed_up_user().await;
    let task = app.create_task(&user, &wid, &json!({ "title": "x" })).await;

    let response = app
        .patch(
            &user,
            &task_path(&wid, &id_of(&task)),
            &json!({ "version": 1, "assignee_id": outsider.id }),
        )
        .await;

    assert_error(response, StatusCode::CONFLICT, "assignee_not_member").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_is_204_and_the_task_is_gone() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let task = app
        .create_task(&user, &wid, &json!({ "title": "bye" }))
        .await;
    let path = task_path(&wid, &id_of(&task));

    let response = app.delete(&user, &path).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.get(&user, &path).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.delete(&user, &path).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_with_a_stale_version_is_409_and_keeps_the_task() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let task = app
        .create_task(&user, &wid, &json!({ "title": "stay" }))
        .await;
    let path = task_path(&wid, &id_of(&task));
    app.patch(&user, &path, &json!({ "version": 1, "title": "stay!" }))
        .await;

    let response = app.delete(&user, &format!("{path}?version=1")).await;

    assert_error(response, StatusCode::CONFLICT, "version_conflict").await;
    assert_eq!(app.get(&user, &path).await.status(), StatusCode::OK);
    let current = app.delete(&user, &format!("{path}?version=2")).await;
    assert_eq!(current.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread")]
async fn activity_records_create_update_delete_newest_first() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let task = app
        .create_task(&user, &wid, &json!({ "title": "tracked" }))
        .await;
    let tid = id_of(&task);
    let path = task_path(&wid, &tid);
    let patched = app
        .patch(
            &user,
            &path,
            &json!({ "version": 1, "status": "in_progress" }),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(
        app.delete(&user, &path).await.status(),
        StatusCode::NO_CONTENT
    );

    let response = app
        .get(&user, &format!("/api/workspaces/{wid}/activity"))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.expect("page");
    assert!(page["next_cursor"].is_null());
    let items = page["items"].as_array().expect("items");
    let kinds: Vec<&str> = items
        .iter()
        .map(|a| a["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["task.deleted", "task.updated", "task.created"]);
    for item in items {
        assert_eq!(item["task_id"], tid.as_str());
        assert_eq!(item["actor_id"], user.id.as_str());
        assert_eq!(item["workspace_id"], wid.as_str());
        assert!(item["created_at"].is_string());
    }
    let changes = &items[1]["data"]["changes"];
    assert_eq!(changes["status"]["from"], "todo");
    assert_eq!(changes["status"]["to"], "in_progress");
    assert!(
        changes.get("title").is_none(),
        "only what changed: {changes}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_change_writes_no_activity() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let task = app.create_task(&user, &wid, &json!({ "title": "x" })).await;
    let path = task_path(&wid, &id_of(&task));
    let stale = app
        .patch(&user, &path, &json!({ "version": 7, "title": "y" }))
        .await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);

    let page: Value = app
        .get(&user, &format!("/api/workspaces/{wid}/activity"))
        .await
        .json()
        .await
        .expect("page");

    assert_eq!(page["items"].as_array().expect("items").len(), 1);
    assert_eq!(page["items"][0]["kind"], "task.created");
}

#[tokio::test(flavor = "multi_thread")]
async fn activity_pages_with_a_cursor() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    for i in 0..3 {
        app.create_task(&user, &wid, &json!({ "title": format!("t{i}") }))
            .await;
    }
    let activity = format!("/api/workspaces/{wid}/activity");

    let first: Value = app
        .get(&user, &format!("{activity}?limit=2"))
        .await
        .json()
        .await
        .expect("page");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second: Value = app
        .get(&user, &format!("{activity}?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .expect("page");

    assert_eq!(ids(&first).len(), 2);
    assert_eq!(ids(&second).len(), 1);
    assert!(second["next_cursor"].is_null());
    let all: HashSet<String> = ids(&first).into_iter().chain(ids(&second)).collect();
    assert_eq!(all.len(), 3);
    assert_eq!(second["items"][0]["data"]["title"], "t0", "oldest last");
    let garbage = app
        .get(&user, &format!("{activity}?cursor=not-a-cursor"))
        .await;
    assert_error(
        garbage,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn of_concurrent_patches_on_one_version_exactly_one_wins() {
    let app = spawn_app().await;
    let (user, wid) = owner_with_workspace(&app).await;
    let task = app
        .create_task(&user, &wid, &json!({ "title": "contended" }))
        .await;
    let path = task_path(&wid, &id_of(&task));

    let patches = (0..8).map(|i| {
        let (app, user, path) = (&app, &user, &path);
        async move {
            app.patch(
                user,
                path,
                &json!({ "version": 1, "title": format!("writer {i}") }),
            )
            .await
        }
    });
    let responses = futures::future::join_all(patches).await;

    let mut winners = 0;
    for response in responses {
        match response.status() {
            StatusCode::OK => winners += 1,
            StatusCode::CONFLICT => {
                assert_error(response, StatusCode::CONFLICT, "version_conflict").await;
            }
            other => panic!(
                "unexpected status {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
    assert_eq!(winners, 1);
    let current: Value = app.get(&user, &path).await.json().await.expect("task");
    assert_eq!(current["version"], 2);
    let activity: Value = app
        .get(&user, &format!("/api/workspaces/{wid}/activity"))
        .await
        .json()
        .await
        .expect("page");
    let updates = activity["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|a| a["kind"] == "task.updated")
        .count();
    assert_eq!(updates, 1, "one update, one activity row");
}
