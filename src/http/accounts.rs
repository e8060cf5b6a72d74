//! `/api/auth/*`: register, login, refresh, logout.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::caller::Auth;
use super::error::{ApiError, ApiResult};
use super::json::{Checks, Json, Validate};
use crate::auth::password::PasswordError;
use crate::auth::sessions::SessionRecord;
use crate::auth::tokens::token_hash;
use crate::clock;
use crate::db::users::User;
use crate::db::{StoreError, tokens, users};
use crate::events::{self, Room, ServerEvent, SessionEnded};
use crate::rate_limit::Quota;
use crate::state::AppState;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
}

/// New account.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// E-mail address (case-insensitive, unique).
    #[schema(
        max_length = 254,
        pattern = r"^[!-?A-~]+@[!--/-?A-~][!-?A-~]*\.[!-?A-~]*[!--/-?A-~]$"
    )]
    email: String,
    /// 8 to 256 characters.
    #[schema(min_length = 8, max_length = 256)]
    password: String,
    /// 1 to 100 characters, not blank.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    display_name: String,
}

/// Rough e-mail shape check: the real check is the confirmation mail a product sends.
pub(crate) fn plausible_email(email: &str) -> bool {
    let email = email.trim();
    email.len() <= 254
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
}

impl Validate for RegisterRequest {
    fn validate(&self) -> Result<(), Vec<super::error::FieldError>> {
        Checks::default()
            .check(
                plausible_email(&self.email),
                "email",
                "must be an e-mail address",
            )
            .check(
                (8..=256).contains(&self.password.chars().count()),
                "password",
                "must be 8 to 256 characters",
            )
            .text(&self.display_name, "display_name", 1, 100)
            .finish()
    }
}

#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = User), (status = 409, description = "e-mail taken"), (status = 422, description = "invalid fields"),
              (status = 503, description = "every password-hashing slot is busy (`Retry-After`)")))]
async fn register(
    State(state): State<AppState>,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let email = req.email.trim().to_lowercase();
    let hash = state
        .passwords
        .hash(req.password)
        .await
        .map_err(password_error)?;
    match users::create(state.db.writer(), &email, &hash, req.display_name.trim()).await {
        Ok(user) => Ok((StatusCode::CREATED, Json(user))),
        Err(StoreError::Conflict(_)) => Err(ApiError::Conflict {
            code: "email_taken",
            message: "an account with this e-mail already exists".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// E-mail address.
    #[schema(min_length = 1, max_length = 254, pattern = r"\S")]
    email: String,
    /// Password.
    #[schema(min_length = 1, max_length = 1024)]
    password: String,
}

impl Validate for LoginRequest {
    fn validate(&self) -> Result<(), Vec<super::error::FieldError>> {
        Checks::default()
            .check(!self.email.trim().is_empty(), "email", "is required")
            .check(!self.password.is_empty(), "password", "is required")
            .check(
                self.password.chars().count() <= 1024,
                "password",
                "is too long",
            )
            .finish()
    }
}

/// A new login.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The user.
    user: User,
    /// Access JWT for `Authorization: Bearer`.
    access_token: String,
    /// Refresh token, single use.
    refresh_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Access token lifetime in seconds.
    expires_in: u64,
}

/// Every password slot stayed busy: 503 with `Retry-After`, as for any dependency that
/// cannot take more right now.
fn password_error(e: PasswordError) -> ApiError {
    match e {
        PasswordError::Busy => ApiError::Unavailable {
            dependency: "password hashing",
        },
        PasswordError::Failed(detail) => ApiError::Internal(detail),
    }
}

/// Login attempts per e-mail address, from any client address
/// (`RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN`): the per-IP budget of `/api/auth/*` alone
/// lets a botnet guess one account's password from many addresses. Charged before the
/// password hash is checked, for known and unknown addresses alike (the answer must
/// not tell them apart). The key holds a hash of the address, not the address. If the
/// limiter fails the attempt goes on, as everywhere (src/http/rate_limit.rs).
async fn charge_account_attempt(state: &AppState, email: &str) -> ApiResult<()> {
    let key = format!("rl:login:{}", &token_hash(email)[..32]);
    let quota = Quota::per_minute(state.config.rate_limit.login_per_account_per_min);
    match state.rate_limiter.check(&key, quota).await {
        Ok(decision) if !decision.allowed => {
            metrics::counter!("shoal_rate_limited_total", "scope" => "login_account").increment(1);
            Err(ApiError::RateLimited {
                retry_after: decision.retry_after.unwrap_or_default(),
            })
        }
        Ok(_) => Ok(()),
        Err(e) => {
            metrics::counter!("shoal_rate_limiter_errors_total").increment(1);
            tracing::warn!(error = %e, "rate limiter unavailable; letting the login attempt through");
            Ok(())
        }
    }
}

#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse, description = "also sets the session cookie"),
              (status = 401, description = "unknown e-mail or wrong password (same answer)"),
              (status = 429, description = "too many attempts from this address, or for this e-mail address from any (`Retry-After`)"),
              (status = 503, description = "every password-hashing slot is busy (`Retry-After`)")))]
async fn login(
    State(state): State<AppState>,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Response> {
    let email = req.email.trim().to_lowercase();
    charge_account_attempt(&state, &email).await?;
    let found = users::find_credentials(state.db.pool(), &email).await?;
    let (user, stored) = match found {
        Some((user, hash)) => (Some(user), Some(hash)),
        None => (None, None),
    };
    let valid = state
        .passwords
        .verify(req.password, stored)
        .await
        .map_err(password_error)?;
    let Some(user) = user.filter(|_| valid) else {
        return Err(ApiError::Unauthorized {
            code: "invalid_credentials",
            message: "e-mail or password is wrong".into(),
        });
    };

    let family = Uuid::now_v7();
    let record = SessionRecord {
        user_id: user.id,
        family_id: family,
        created_at: clock::now_micros(),
        expires_at: 0,
    };
    let (cookie, session_key) = state.sessions.create(&record).await?;
    let refresh = state.tokens.issue_refresh(user.id, family);
    let mut tx = state.db.begin().await?;
    tokens::create_family(&mut *tx, family, user.id, &session_key).await?;
    tokens::insert(
        &mut *tx,
        refresh.jti,
        family,
        &refresh.hash,
        refresh.expires_at_micros,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;

    let body = LoginResponse {
        access_token: state.tokens.issue_access(user.id, &session_key, family),
        refresh_token: refresh.token,
        token_type: "Bearer",
        expires_in: state.tokens.access_ttl().as_secs(),
        user,
    };
    let mut response = Json(body).into_response();
    set_cookie(response.headers_mut(), &state, Some(&cookie));
    Ok(response)
}

/// A refresh token to exchange.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// The refresh token from login or the previous refresh.
    #[schema(min_length = 1)]
    refresh_token: String,
}

impl Validate for RefreshRequest {
    fn validate(&self) -> Result<(), Vec<super::error::FieldError>> {
        Checks::default()
            .check(
                !self.refresh_token.is_empty(),
                "refresh_token",
                "is required",
            )
            .finish()
    }
}

/// A new token pair.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    /// Access JWT.
    access_token: String,
    /// The next refresh token; the one sent is now dead.
    refresh_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Access token lifetime in seconds.
    expires_in: u64,
}

#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair),
              (status = 401, description = "invalid, expired, revoked, or reused (the family is then revoked)")))]
async fn refresh(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<Json<TokenPair>> {
    let refused = |code: &'static str, message: &str| ApiError::Unauthorized {
        code,
        message: message.into(),
    };
    let claims = state
        .tokens
        .verify_refresh(&req.refresh_token)
        .map_err(|_| refused("invalid_token", "refresh token is invalid or expired"))?;

    let mut tx = state.db.begin().await?;
    let stored = tokens::find(&mut tx, claims.jti)
        .await?
        .filter(|t| t.token_hash == token_hash(&req.refresh_token) && t.family_id == claims.fam)
        .ok_or_else(|| refused("invalid_token", "refresh token is unknown"))?;
    if stored.family_revoked {
        return Err(refused(
            "refresh_token_revoked",
            "this login was ended; log in again",
        ));
    }
    if stored.expires_at <= clock::now_micros() {
        return Err(refused("invalid_token", "refresh token expired"));
    }
    if stored.used || !tokens::mark_used(&mut tx, claims.jti).await? {
        // Someone presented a token that was already exchanged: it leaked. End the
        // whole login (RFC 6819 §5.2.2.3) for the thief and the user alike.
        tokens::revoke_family(&mut *tx, stored.family_id).await?;
        tx.commit().await.map_err(StoreError::from)?;
        state.sessions.destroy(&stored.session_key).await?;
        end_sockets(
            &state,
            stored.user_id,
            stored.family_id,
            "refresh_token_reused",
        )
        .await;
        tracing::warn!(family = %stored.family_id, "refresh token reuse; family revoked");
        return Err(refused(
            "refresh_token_reused",
            "refresh token was already used; this login has been revoked",
        ));
    }
    let next = state.tokens.issue_refresh(stored.user_id, stored.family_id);
    tokens::insert(
        &mut *tx,
        next.jti,
        stored.family_id,
        &next.hash,
        next.expires_at_micros,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;

    // The refresh token outlives the session: a valid refresh brings the session
    // (and so the access tokens that name it) back for another SESSION_TTL.
    let record = match state.sessions.load(&stored.session_key).await? {
        Some(r) => r,
        None => SessionRecord {
            user_id: stored.user_id,
            family_id: stored.family_id,
            created_at: clock::now_micros(),
            expires_at: 0,
        },
    };
    state.sessions.save(&stored.session_key, &record).await?;

    Ok(Json(TokenPair {
        access_token: state.tokens.issue_access(
            stored.user_id,
            &stored.session_key,
            stored.family_id,
        ),
        refresh_token: next.token,
        token_type: "Bearer",
        expires_in: state.tokens.access_ttl().as_secs(),
    }))
}

#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    responses((status = 204, description = "session destroyed, refresh family revoked"), (status = 401)))]
async fn logout(State(state): State<AppState>, Auth(me): Auth) -> ApiResult<Response> {
    tokens::revoke_family(state.db.writer(), me.family_id).await?;
    state.sessions.destroy(&me.session_key).await?;
    end_sockets(&state, me.user_id, me.family_id, "logout").await;
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(response.headers_mut(), &state, None);
    Ok(response)
}

/// Closes the Socket.IO connections of an ended login on every instance
/// (`session:ended`, docs/realtime.md): a socket is authenticated once, at its
/// handshake, so without this it would outlive the login.
async fn end_sockets(state: &AppState, user_id: Uuid, family_id: Uuid, reason: &str) {
    events::publish(
        state,
        Room::User(user_id),
        ServerEvent::SessionEnded(SessionEnded {
            family_id,
            reason: reason.to_owned(),
        }),
    )
    .await;
}

/// Sets (or, with `None`, clears) the session cookie. Written by hand: one header
/// with fixed attributes does not warrant a cookie-jar dependency.
fn set_cookie(headers: &mut HeaderMap, state: &AppState, value: Option<&str>) {
    let name = &state.config.auth.session_cookie_name;
    let secure = if state.config.auth.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let cookie = match value {
        Some(v) => format!(
            "{name}={v}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            state.sessions.ttl().as_secs()
        ),
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, v);
    }
}
