//! Authentication: password hashing, access and refresh tokens, server-side sessions.
//!
//! A login creates a server-side session (the cookie) and a refresh-token family; the
//! access JWT names the session, so logging out ends the cookie, the access token
//! and the refresh family together, on every instance.

pub mod password;
pub mod sessions;
pub mod tokens;
