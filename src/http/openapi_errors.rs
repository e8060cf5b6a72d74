//! The answers every operation shares, stated once for the whole OpenAPI document
//! instead of in each handler's annotation: the error body's schema on every error
//! response, 401 and the security requirement on authenticated operations, 429 and
//! 503 on every API call, and 400/413/415/422 where a JSON body or query is read.
//! A generated client (clients/js) and a schema fuzzer (schemathesis in .ci/run) then
//! find every status the server can answer documented.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};
use utoipa::{PartialSchema, ToSchema};

use super::error::FieldError;

/// An error answer: `{"error": {…}}`.
#[derive(ToSchema)]
#[allow(dead_code)] // Documentation only: errors are rendered in src/http/context.rs.
pub struct Error {
    /// What went wrong.
    error: ErrorDetail,
}

/// The fields of an error answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Machine-readable (`validation_failed`, `not_found`, `rate_limited`, …).
    code: String,
    /// For people.
    message: String,
    /// The request's id (`X-Request-Id`), for the logs.
    request_id: String,
    /// For `validation_failed`: each failing field.
    fields: Option<Vec<FieldError>>,
}

/// Operations anybody may call (every other `/api/` operation needs a login).
const ANONYMOUS: [&str; 5] = [
    "/api/auth/register",
    "/api/auth/login",
    "/api/auth/refresh",
    "/api/health",
    "/api/ready",
];

/// Adds the shared answers to every operation of `openapi`.
pub fn document(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    for (name, schema) in [
        ("Error", Error::schema()),
        ("ErrorDetail", ErrorDetail::schema()),
        ("FieldError", FieldError::schema()),
    ] {
        components.schemas.insert(name.into(), schema);
    }
    for (path, item) in openapi.paths.paths.iter_mut() {
        if !path.starts_with("/api/") {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            shared_answers(path, operation);
        }
    }
}

fn shared_answers(path: &str, op: &mut Operation) {
    let probe = path == "/api/health" || path == "/api/ready";
    if !probe {
        add(op, "429", "over a request budget (`Retry-After`)");
        add(
            op,
            "503",
            "a dependency is unavailable; retry (`Retry-After`)",
        );
    }
    if path.starts_with("/api/admin/") {
        // The operator's token, not a user's login.
        op.security = Some(vec![SecurityRequirement::new(
            "admin_token",
            Vec::<String>::new(),
        )]);
    } else if !ANONYMOUS.contains(&path) {
        add(op, "401", "no valid login (token or session cookie)");
        op.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("session_cookie", Vec::<String>::new()),
        ]);
    }
    if op.request_body.is_some() {
        add(op, "400", "the body is not valid JSON");
        add(op, "413", "the body is larger than the limit");
        add(op, "415", "the body is not `application/json`");
        add(op, "422", "invalid fields");
    }
    let params = op.parameters.iter().flatten();
    let (mut query, mut in_path) = (false, false);
    for param in params {
        if let RefOr::T(p) = param {
            query |= matches!(p.parameter_in, ParameterIn::Query);
            in_path |= matches!(p.parameter_in, ParameterIn::Path);
        }
    }
    if query {
        add(op, "422", "an invalid query parameter");
    }
    if in_path {
        add(op, "404", "not found (or not visible to the caller)");
    }
    // Every error answer has the error body, and every answer a description.
    for (status, response) in op.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if response.description.is_empty() {
            response.description = match status.as_str() {
                "200" | "201" | "202" | "204" => "done",
                "401" => "no valid login (token or session cookie)",
                "403" => "not allowed",
                "404" => "not found (or not visible to the caller)",
                "409" => "conflict with the current state",
                "422" => "invalid fields",
                _ => "see the error code",
            }
            .into();
        }
        if status.starts_with('4') || status.starts_with('5') {
            {
                if response.content.is_empty() {
                    response.content.insert(
                        "application/json".into(),
                        RefOr::T(Content::new(Some(Ref::from_schema_name("Error")))),
                    );
                }
            }
        }
    }
}

/// Documents `status` unless the operation does already.
fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.into())
        .or_insert_with(|| RefOr::T(Response::new(description)));
}
