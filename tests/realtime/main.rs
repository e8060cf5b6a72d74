//! Realtime tests with a real Socket.IO v4 client (`rust_socketio`) against real
//! `shoal` processes: embedded (one process on SQLite) and distributed (two or three
//! processes on one PostgreSQL database and one Redis). Each test checks sentences of
//! issue 4's "What a user must be able to do"; see `docs/realtime.md`.

#[path = "../common/mod.rs"]
mod common;
mod distributed;
mod embedded;
mod harness;
