//! What a draining instance tells the clients of its open connections: every answer
//! carries `Connection: close`, so a client (or a load balancer's keep-alive pool)
//! closes the connection itself after reading it, instead of the instance closing a
//! connection the client may be writing its next request on at that moment.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::state::AppState;

/// See the module doc. Upgrades (`101`) are left alone: their connection is no longer
/// HTTP.
pub async fn close_while_draining(
    State(state): State<AppState>,
    mut response: Response,
) -> Response {
    if state.lifecycle.is_draining() && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
