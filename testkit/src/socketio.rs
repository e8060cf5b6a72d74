//! A real Socket.IO v4 client (`rust_socketio`) whose events land in a channel that
//! tests await. The panicking calls (`connect`, `call`, `next_where`) are for tests
//! where the server must answer; the `try_` ones return `None` when the instance
//! under the client goes away, for tests that kill instances and reconnect.

use futures::FutureExt;
use rust_socketio::asynchronous::{Client as SioClient, ClientBuilder, ReconnectSettings};
use rust_socketio::{Payload, TransportType};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::rest::COOKIE_NAME;
use crate::wait::PATIENCE;

/// How a client authenticates its handshake.
pub enum Auth<'a> {
    /// `auth: {token}`.
    Token(&'a str),
    /// The session cookie on the handshake request.
    Cookie(&'a str),
    /// The session cookie, sent as a page at this `Origin` would send it.
    CookieFrom(&'a str, &'a str),
    /// Nothing.
    Nothing,
}

/// One received server → client item.
#[derive(Debug, Clone)]
pub struct Received {
    /// The event name; `$connect`, `$error`, `$close`, `$dropped` for the lifecycle.
    pub event: String,
    /// Its first argument.
    pub data: Value,
}

/// A real Socket.IO client whose events are queued for the test to await.
pub struct Sio {
    client: SioClient,
    events: mpsc::UnboundedReceiver<Received>,
    /// Everything taken from the queue so far (for "received nothing" checks).
    pub seen: Vec<Received>,
}

fn payload_value(payload: Payload) -> Value {
    match payload {
        Payload::Text(mut values) => {
            let first = if values.is_empty() {
                Value::Null
            } else {
                values.remove(0)
            };
            // Acks arrive as the raw argument array.
            match first {
                Value::Array(mut inner) if !inner.is_empty() => inner.remove(0),
                other => other,
            }
        }
        #[allow(deprecated)]
        Payload::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        Payload::Binary(_) => Value::Null,
    }
}

impl Sio {
    /// Opens the engine.io connection and sends CONNECT; does not wait for the
    /// answer. `None` when the engine.io connection cannot be opened.
    pub async fn try_open(base: &str, auth: Auth<'_>) -> Option<Sio> {
        let (tx, events) = mpsc::unbounded_channel::<Received>();
        let push = |tx: &mpsc::UnboundedSender<Received>, name: &'static str| {
            let tx = tx.clone();
            move |payload: Payload, _c: SioClient| {
                let _ = tx.send(Received {
                    event: name.into(),
                    data: payload_value(payload),
                });
                async {}.boxed()
            }
        };
        let any_tx = tx.clone();
        let dropped_tx = tx.clone();
        let mut builder = ClientBuilder::new(format!("{base}/"))
            .namespace("/")
            // WebSocket from the start: rust_socketio's polling → WebSocket upgrade
            // can lose a packet emitted while the upgrade is in flight.
            .transport_type(TransportType::Websocket)
            // One attempt on a dropped transport, only to learn it dropped (the
            // `$dropped` event): tests reconnect by hand (to the instance they
            // choose, or through the load balancer) and rejoin, like an app would.
            .reconnect(true)
            .reconnect_on_disconnect(false)
            .max_reconnect_attempts(1)
            .reconnect_delay(10, 20)
            .on_reconnect(move || {
                let _ = dropped_tx.send(Received {
                    event: "$dropped".into(),
                    data: Value::Null,
                });
                async { ReconnectSettings::new() }.boxed()
            })
            .on("open", push(&tx, "$connect"))
            .on("error", push(&tx, "$error"))
            .on("close", push(&tx, "$close"))
            .on_any(move |event, payload, _c| {
                let _ = any_tx.send(Received {
                    event: String::from(event),
                    data: payload_value(payload),
                });
                async {}.boxed()
            });
        builder = match auth {
            Auth::Token(t) => builder.auth(json!({ "token": t })),
            Auth::Cookie(c) => builder.opening_header("Cookie", format!("{COOKIE_NAME}={c}")),
            Auth::CookieFrom(c, origin) => builder
                .opening_header("Cookie", format!("{COOKIE_NAME}={c}"))
                .opening_header("Origin", origin),
            Auth::Nothing => builder,
        };
        let client = builder.connect().await.ok()?;
        Some(Sio {
            client,
            events,
            seen: Vec::new(),
        })
    }

    /// [`Sio::try_open`] that must succeed.
    pub async fn open(base: &str, auth: Auth<'_>) -> Sio {
        Sio::try_open(base, auth)
            .await
            .expect("engine.io connection opened")
    }

    /// Connects and waits for the namespace CONNECT (panics on `connect_error`).
    pub async fn connect(base: &str, auth: Auth<'_>) -> Sio {
        let mut sio = Sio::open(base, auth).await;
        let first = sio.next_lifecycle().await;
        assert_eq!(
            first.event, "$connect",
            "expected a connection, got {first:?}"
        );
        sio
    }

    /// Connects and waits for the namespace CONNECT; `None` on a refusal or a
    /// dropped transport.
    pub async fn try_connect(base: &str, auth: Auth<'_>) -> Option<Sio> {
        let mut sio = Sio::try_open(base, auth).await?;
        let first = sio.try_next_where(|r| r.event.starts_with('$')).await?;
        (first.event == "$connect").then_some(sio)
    }

    async fn next_lifecycle(&mut self) -> Received {
        self.next_where(|r| r.event.starts_with('$')).await
    }

    /// The `connect_error` reason of a refused handshake.
    pub async fn refusal(base: &str, auth: Auth<'_>) -> String {
        let mut sio = Sio::open(base, auth).await;
        let first = sio.next_lifecycle().await;
        assert_eq!(
            first.event, "$error",
            "expected connect_error, got {first:?}"
        );
        let text = first
            .data
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| first.data.to_string());
        let json = text.split_once(": ").map(|(_, j)| j).unwrap_or(&text);
        let value: Value = serde_json::from_str(json).unwrap_or(Value::String(json.into()));
        let _ = sio.client.disconnect().await;
        value["message"].as_str().unwrap_or_default().to_owned()
    }

    /// The next received item matching `pred` (others stay in `seen`).
    pub async fn next_where(&mut self, pred: impl FnMut(&Received) -> bool) -> Received {
        match self.try_next_where(pred).await {
            Some(item) => item,
            None => panic!(
                "no matching event within {PATIENCE:?}; seen: {:?}",
                self.seen
            ),
        }
    }

    /// The next received item matching `pred` within [`PATIENCE`] (others stay in
    /// `seen`); `None` if nothing came or the client is gone.
    pub async fn try_next_where(
        &mut self,
        mut pred: impl FnMut(&Received) -> bool,
    ) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let item = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .ok()??;
            self.seen.push(item.clone());
            if pred(&item) {
                return Some(item);
            }
        }
    }

    /// The next received item, whatever it is, without a bound (for a follower that
    /// selects on it); `None` once the client is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        self.events.recv().await
    }

    /// The next `event`'s data.
    pub async fn next_event(&mut self, event: &str) -> Value {
        self.next_where(|r| r.event == event).await.data
    }

    /// Waits until the transport dropped or the server disconnected the socket.
    pub async fn dropped(&mut self) {
        self.next_where(|r| r.event == "$dropped" || r.event == "$close")
            .await;
    }

    /// Emits `event` with `data` and awaits the ack.
    pub async fn call(&self, event: &str, data: Value) -> Value {
        self.try_call(event, data)
            .await
            .unwrap_or_else(|| panic!("no ack for {event}"))
    }

    /// Emits and awaits the ack (bounded); `None` if the transport is gone.
    pub async fn try_call(&self, event: &str, data: Value) -> Option<Value> {
        let (tx, rx) = tokio::sync::oneshot::channel::<Value>();
        let tx = std::sync::Mutex::new(Some(tx));
        self.client
            .emit_with_ack(
                event,
                data,
                PATIENCE,
                move |payload: Payload, _c: SioClient| {
                    if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        let _ = tx.send(payload_value(payload));
                    }
                    async {}.boxed()
                },
            )
            .await
            .ok()?;
        tokio::time::timeout(PATIENCE, rx).await.ok()?.ok()
    }

    /// `workspace:join`, which must succeed; the ack.
    pub async fn join(&self, wid: &str, since_seq: Option<i64>) -> Value {
        let ack = self
            .call("workspace:join", join_request(wid, since_seq))
            .await;
        assert_eq!(ack["ok"], true, "join refused: {ack}");
        ack
    }

    /// `workspace:join`; the ack, or `None` if the transport is gone.
    pub async fn try_join(&self, wid: &str, since_seq: Option<i64>) -> Option<Value> {
        self.try_call("workspace:join", join_request(wid, since_seq))
            .await
    }

    /// `message:send`, which must succeed; the ack.
    pub async fn send(&self, wid: &str, body: &str, client_id: &str) -> Value {
        let ack = self
            .call("message:send", send_request(wid, body, client_id))
            .await;
        assert_eq!(ack["ok"], true, "message:send refused: {ack}");
        ack
    }

    /// `message:send`; the acked `seq`, or `None` (retry with the same `client_id`).
    pub async fn try_send(&self, wid: &str, body: &str, client_id: &str) -> Option<i64> {
        let ack = self
            .try_call("message:send", send_request(wid, body, client_id))
            .await?;
        ack["seq"].as_i64()
    }

    /// The next `message:new` of `wid`.
    pub async fn next_message(&mut self, wid: &str) -> Value {
        let wid = wid.to_owned();
        self.next_where(|r| r.event == "message:new" && r.data["workspace_id"] == wid.as_str())
            .await
            .data
    }

    /// The `message:new` of `wid` with this `seq` (earlier ones stay in `seen`).
    pub async fn message_with_seq(&mut self, wid: &str, seq: i64) -> Value {
        let wid = wid.to_owned();
        self.next_where(|r| {
            r.event == "message:new"
                && r.data["workspace_id"] == wid.as_str()
                && r.data["seq"] == seq
        })
        .await
        .data
    }

    /// Moves everything already received into `seen` (events that arrived before an
    /// ack are queued before the ack's callback ran).
    pub fn drain(&mut self) {
        while let Ok(item) = self.events.try_recv() {
            self.seen.push(item);
        }
    }

    /// Every `message:new` `seq` of `wid` received so far.
    pub fn seen_seqs(&mut self, wid: &str) -> Vec<i64> {
        self.drain();
        self.seen
            .iter()
            .filter(|r| r.event == "message:new" && r.data["workspace_id"] == wid)
            .filter_map(|r| r.data["seq"].as_i64())
            .collect()
    }

    /// Emits `event` with one binary attachment (no ack).
    pub async fn emit_binary(&self, event: &str, bytes: Vec<u8>) {
        self.client
            .emit(event, Payload::Binary(bytes.into()))
            .await
            .expect("emit a binary event");
    }

    /// How many `event` items were received so far.
    pub fn count_of(&mut self, event: &str) -> usize {
        self.drain();
        self.seen.iter().filter(|r| r.event == event).count()
    }

    /// Disconnects.
    pub async fn close(self) {
        let _ = self.client.disconnect().await;
    }
}

fn join_request(wid: &str, since_seq: Option<i64>) -> Value {
    let mut req = json!({ "workspace_id": wid });
    if let Some(s) = since_seq {
        req["since_seq"] = json!(s);
    }
    req
}

fn send_request(wid: &str, body: &str, client_id: &str) -> Value {
    json!({ "workspace_id": wid, "body": body, "client_id": client_id })
}
