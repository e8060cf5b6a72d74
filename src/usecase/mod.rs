//! Use-cases: what Shoal does for a user, whichever transport asked. The HTTP API
//! ([`crate::http`]) and Socket.IO ([`crate::realtime`]) parse their own wire format,
//! call into here, and map the typed error that comes back to their own answer (a
//! status and JSON body, or an error ack), so one rule gives one answer on both.
//!
//! Dependencies point down from here: use-cases call the store, the capabilities
//! and [`crate::events`]; they never call a transport.
//!
//! - [`identity`]: who is calling, from an access token or a session cookie.
//! - [`membership`]: whether a user may act in a workspace.
//! - [`chat`]: posting a chat message (`POST …/messages` and `message:send`).

pub mod chat;
pub mod identity;
pub mod membership;
