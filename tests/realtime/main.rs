//! Realtime tests with a real Socket.IO v4 client (`rust_socketio`) against real
//! `shoal` processes: embedded (one process on SQLite) and distributed (two or three
//! processes on one PostgreSQL database and one Redis). Each test checks a promise of
//! `docs/realtime.md`.

mod distributed;
mod embedded;
mod room_channels;
