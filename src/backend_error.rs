//! The one error type of the capability backends (sessions, cache, rate limiter,
//! pub/sub, presence, registry, analytics opt-out).
//!
//! Every backend fails in the same two ways that a caller cares about — the
//! dependency is unreachable, or it handed back something we cannot read — so they
//! share one error with a [`BackendErrorKind`] instead of seven copies of it. Callers
//! match on the kind, never on a Redis or sqlx error.

/// What went wrong, as far as a caller needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The dependency is down, timed out or refused: retry later, answer 503.
    Unavailable,
    /// The dependency answered with data we cannot decode: a bug or tampering.
    Corrupt,
}

/// A failure of a capability backend.
#[derive(Debug, thiserror::Error)]
#[error("{dependency} {}: {message}", match .kind { BackendErrorKind::Unavailable => "unavailable", BackendErrorKind::Corrupt => "returned unreadable data" })]
pub struct BackendError {
    kind: BackendErrorKind,
    /// The dependency by name (`redis`, `database`), shown in 503 bodies and readiness.
    dependency: &'static str,
    message: String,
}

impl BackendError {
    /// The dependency is unreachable.
    pub fn unavailable(dependency: &'static str, cause: impl std::fmt::Display) -> Self {
        Self {
            kind: BackendErrorKind::Unavailable,
            dependency,
            message: cause.to_string(),
        }
    }

    /// The dependency returned data that does not decode.
    pub fn corrupt(dependency: &'static str, cause: impl std::fmt::Display) -> Self {
        Self {
            kind: BackendErrorKind::Corrupt,
            dependency,
            message: cause.to_string(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// Which dependency failed (`redis`, `database`).
    pub fn dependency(&self) -> &'static str {
        self.dependency
    }
}

impl From<redis::RedisError> for BackendError {
    fn from(e: redis::RedisError) -> Self {
        if e.kind() == redis::ErrorKind::Parse || e.kind() == redis::ErrorKind::UnexpectedReturnType
        {
            BackendError::corrupt("redis", e)
        } else {
            BackendError::unavailable("redis", e)
        }
    }
}

impl From<sqlx::Error> for BackendError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                BackendError::corrupt("database", e)
            }
            other => BackendError::unavailable("database", other),
        }
    }
}
