//! Engine.IO v4 / Socket.IO v5 text packets: just what the load tool needs.
//!
//! # Why a hand-written client here
//!
//! Shoal's own tests talk to the server through a real Socket.IO client
//! (`rust_socketio`), because they check that the stock protocol works end to end.
//! This load tool has a different job: open thousands of connections from one
//! process on a small box and measure the *server*, so the client must cost as
//! little as possible and must not distort the figures. A generic client brings
//! its own per-connection machinery (background tasks or threads, reconnection
//! logic, callback registries, polling transport) and allocates ack ids itself.
//! Here each connection is one WebSocket (`transport=websocket` only, no HTTP
//! long-polling upgrade) driven by one tokio task with small buffers, and the tool
//! allocates its own ack ids per connection, so a publisher can match each
//! `message:send` ack to the message it sent without any shared registry.
//!
//! Only the text packets of the default namespace `/` are supported; binary
//! attachments are not (Shoal does not send any). The format:
//!
//! - Engine.IO (one packet per WebSocket frame): `0` open + JSON, `1` close,
//!   `2` ping (answered by `3` pong), `4` message + Socket.IO packet, `6` noop.
//! - Socket.IO: `<type>[<nsp>,][<ack id>][<json>]` with type `0` connect,
//!   `1` disconnect, `2` event, `3` ack, `4` connect error.

use serde::Serialize;
use std::fmt::Write as _;

/// The pong frame that answers a server ping (`2`).
pub(crate) const PONG: &str = "3";

/// One decoded Engine.IO packet (a WebSocket text frame).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Eio<'a> {
    /// `0{"sid":…,"pingInterval":…}`.
    Open(&'a str),
    Close,
    /// `2` or `2probe`; must be answered with [`PONG`].
    Ping,
    Pong,
    /// `4…`: the Socket.IO packet inside.
    Message(&'a str),
    Noop,
}

/// One decoded Socket.IO packet of the default namespace.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sio<'a> {
    /// `0{"sid":…}`: the handshake was accepted.
    Connect(&'a str),
    Disconnect,
    /// `2[id]["name", args…]`; `json` is the whole array.
    Event {
        id: Option<u64>,
        json: &'a str,
    },
    /// `3<id>[args…]`; `json` is the argument array.
    Ack {
        id: u64,
        json: &'a str,
    },
    /// `4{"message":…}`: the handshake was refused.
    ConnectError(&'a str),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ProtoError(pub(crate) String);

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtoError {}

fn err(what: &str, frame: &str) -> ProtoError {
    let shown: String = frame.chars().take(80).collect();
    ProtoError(format!("{what}: {shown:?}"))
}

pub(crate) fn decode_eio(frame: &str) -> Result<Eio<'_>, ProtoError> {
    let mut chars = frame.chars();
    let kind = chars
        .next()
        .ok_or_else(|| err("empty Engine.IO frame", frame))?;
    let rest = chars.as_str();
    match kind {
        '0' => Ok(Eio::Open(rest)),
        '1' => Ok(Eio::Close),
        '2' => Ok(Eio::Ping),
        '3' => Ok(Eio::Pong),
        '4' => Ok(Eio::Message(rest)),
        '6' => Ok(Eio::Noop),
        _ => Err(err("unknown Engine.IO packet", frame)),
    }
}

/// Decodes the Socket.IO packet carried by an Engine.IO message (without the `4`).
pub(crate) fn decode_sio(packet: &str) -> Result<Sio<'_>, ProtoError> {
    let mut chars = packet.chars();
    let kind = chars
        .next()
        .ok_or_else(|| err("empty Socket.IO packet", packet))?;
    let mut rest = chars.as_str();
    if matches!(kind, '5' | '6') {
        return Err(err("binary Socket.IO packets are not supported", packet));
    }
    // A namespace other than "/" is written as "/name," right after the type.
    if rest.starts_with('/') {
        let comma = rest
            .find(',')
            .ok_or_else(|| err("namespace without a comma", packet))?;
        let nsp = &rest[..comma];
        if nsp != "/" {
            return Err(err("namespace other than / is not supported", packet));
        }
        rest = &rest[comma + 1..];
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits == 0 {
        None
    } else {
        Some(
            rest[..digits]
                .parse::<u64>()
                .map_err(|_| err("ack id out of range", packet))?,
        )
    };
    let json = &rest[digits..];
    match kind {
        '0' => Ok(Sio::Connect(json)),
        '1' => Ok(Sio::Disconnect),
        '2' => {
            if !json.starts_with('[') {
                return Err(err("event without an array", packet));
            }
            Ok(Sio::Event { id, json })
        }
        '3' => {
            let id = id.ok_or_else(|| err("ack without an id", packet))?;
            if !json.starts_with('[') {
                return Err(err("ack without an array", packet));
            }
            Ok(Sio::Ack { id, json })
        }
        '4' => Ok(Sio::ConnectError(json)),
        _ => Err(err("unknown Socket.IO packet", packet)),
    }
}

/// `40{auth}`: the Socket.IO connect request to the default namespace, with the
/// handshake `auth` object.
pub(crate) fn encode_connect(auth: &impl Serialize) -> Result<String, serde_json::Error> {
    Ok(format!("40{}", serde_json::to_string(auth)?))
}

/// `42[ack id]["name", data]`: an event, asking for an ack when `ack_id` is set.
pub(crate) fn encode_event(
    ack_id: Option<u64>,
    name: &str,
    data: &impl Serialize,
) -> Result<String, serde_json::Error> {
    let mut out = String::from("42");
    if let Some(id) = ack_id {
        // Writing to a String cannot fail.
        let _ = write!(out, "{id}");
    }
    out.push_str(&serde_json::to_string(&(name, data))?);
    Ok(out)
}

/// The event name of an event's JSON array, without decoding its arguments.
pub(crate) fn event_name(json: &str) -> Option<&str> {
    // `["name", …]`; Socket.IO event names never need escaping in practice, and a
    // name with an escape simply does not match any name the tool looks for.
    let rest = json.strip_prefix("[\"")?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_engine_io_packets() {
        assert_eq!(
            decode_eio(r#"0{"sid":"a","pingInterval":25000}"#),
            Ok(Eio::Open(r#"{"sid":"a","pingInterval":25000}"#))
        );
        assert_eq!(decode_eio("1"), Ok(Eio::Close));
        assert_eq!(decode_eio("2"), Ok(Eio::Ping));
        assert_eq!(decode_eio("3"), Ok(Eio::Pong));
        assert_eq!(decode_eio("6"), Ok(Eio::Noop));
        assert_eq!(
            decode_eio(r#"40{"sid":"x"}"#),
            Ok(Eio::Message(r#"0{"sid":"x"}"#))
        );
        assert!(decode_eio("").is_err());
        assert!(decode_eio("9").is_err());
    }

    #[test]
    fn decodes_socket_io_packets() {
        assert_eq!(
            decode_sio(r#"0{"sid":"x"}"#),
            Ok(Sio::Connect(r#"{"sid":"x"}"#))
        );
        assert_eq!(decode_sio("1"), Ok(Sio::Disconnect));
        assert_eq!(
            decode_sio(r#"2["message:new",{"seq":1}]"#),
            Ok(Sio::Event {
                id: None,
                json: r#"["message:new",{"seq":1}]"#
            })
        );
        assert_eq!(
            decode_sio(r#"217["ping",{}]"#),
            Ok(Sio::Event {
                id: Some(17),
                json: r#"["ping",{}]"#
            })
        );
        assert_eq!(
            decode_sio(r#"342[{"ok":true,"id":"m","seq":3}]"#),
            Ok(Sio::Ack {
                id: 42,
                json: r#"[{"ok":true,"id":"m","seq":3}]"#
            })
        );
        assert_eq!(
            decode_sio(r#"4{"message":"invalid_token"}"#),
            Ok(Sio::ConnectError(r#"{"message":"invalid_token"}"#))
        );
    }

    #[test]
    fn explicit_default_namespace_is_accepted_and_others_refused() {
        assert_eq!(decode_sio("3/,7[1]"), Ok(Sio::Ack { id: 7, json: "[1]" }));
        assert!(decode_sio("2/admin,[\"x\"]").is_err());
    }

    #[test]
    fn refuses_malformed_socket_io_packets() {
        assert!(decode_sio("").is_err());
        assert!(decode_sio("3[1]").is_err(), "ack without id");
        assert!(decode_sio("2{}").is_err(), "event without array");
        assert!(decode_sio("51-[\"x\",{}]").is_err(), "binary");
        assert!(
            decode_sio("399999999999999999999999[1]").is_err(),
            "id overflow"
        );
        assert!(decode_sio("8").is_err());
    }

    #[test]
    fn encodes_connect_and_events() {
        assert_eq!(
            encode_connect(&json!({"token": "abc"})).unwrap(),
            r#"40{"token":"abc"}"#
        );
        assert_eq!(
            encode_event(None, "typing", &json!({"workspace_id": "w"})).unwrap(),
            r#"42["typing",{"workspace_id":"w"}]"#
        );
        assert_eq!(
            encode_event(Some(12), "workspace:join", &json!({"workspace_id": "w"})).unwrap(),
            r#"4212["workspace:join",{"workspace_id":"w"}]"#
        );
    }

    #[test]
    fn encoded_event_round_trips() {
        let frame = encode_event(Some(5), "message:send", &json!({"body": "a\"b"})).unwrap();
        let Eio::Message(sio) = decode_eio(&frame).unwrap() else {
            panic!("not a message: {frame}");
        };
        let Sio::Event { id, json } = decode_sio(sio).unwrap() else {
            panic!("not an event: {sio}");
        };
        assert_eq!(id, Some(5));
        assert_eq!(event_name(json), Some("message:send"));
        let (name, data): (String, serde_json::Value) = serde_json::from_str(json).unwrap();
        assert_eq!(name, "message:send");
        assert_eq!(data["body"], "a\"b");
    }

    #[test]
    fn event_name_of_malformed_arrays() {
        assert_eq!(event_name(r#"["message:new",{}]"#), Some("message:new"));
        assert_eq!(event_name("[1]"), None);
        assert_eq!(event_name(""), None);
    }
}
