//! Request budgets on `/api/*`: per user when authenticated, per client IP otherwise,
//! and a stricter per-IP budget on `/api/auth/*` (password guessing). An IPv6 client
//! is budgeted per /64 ([`ip_bucket`]). Every limited
//! response carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a
//! 429 also carries `Retry-After`.
//!
//! If the limiter's backend is down, requests pass (fail open) and the failure is
//! logged and counted: an outage of Redis must not take the API down with it.

use std::net::IpAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::caller::Caller;
use super::error::ApiError;
use crate::config::IpNet;
use crate::rate_limit::{Decision, Quota};
use crate::state::AppState;

/// See the module doc.
pub async fn limit(state: &AppState, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<crate::listener::PeerAddr>>()
        .map(|c| c.0.0.ip());
    let ip = ip_bucket(client_ip(
        &state.config.server.trusted_proxies,
        peer,
        req.headers(),
    ));
    let (scope, key, quota) = if req.uri().path().starts_with("/api/auth/") {
        (
            "auth",
            format!("rl:auth:{ip}"),
            Quota::per_minute(state.config.rate_limit.auth_per_min),
        )
    } else if let Some(Caller::User(p)) = req.extensions().get::<Caller>() {
        (
            "user",
            format!("rl:user:{}", p.user_id),
            Quota::per_minute(state.config.rate_limit.user_per_min),
        )
    } else {
        (
            "ip",
            format!("rl:ip:{ip}"),
            Quota::per_minute(state.config.rate_limit.ip_per_min),
        )
    };
    match state.rate_limiter.check(&key, quota).await {
        Ok(decision) if decision.allowed => {
            let mut response = next.run(req).await;
            set_headers(response.headers_mut(), &decision);
            response
        }
        Ok(decision) => {
            metrics::counter!("shoal_rate_limited_total", "scope" => scope).increment(1);
            let mut response = ApiError::RateLimited {
                retry_after: decision.retry_after.unwrap_or_default(),
            }
            .into_response();
            set_headers(response.headers_mut(), &decision);
            response
        }
        Err(e) => {
            metrics::counter!("shoal_rate_limiter_errors_total").increment(1);
            tracing::warn!(error = %e, "rate limiter unavailable; letting the request through");
            next.run(req).await
        }
    }
}

fn set_headers(headers: &mut HeaderMap, d: &Decision) {
    let reset = d.reset_after.as_secs_f64().ceil() as u64;
    for (name, value) in [
        ("ratelimit-limit", u64::from(d.limit)),
        ("ratelimit-remaining", u64::from(d.remaining)),
        ("ratelimit-reset", reset),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
}

/// The budget an address spends: an IPv4 address (also written as an IPv4-mapped IPv6
/// one) is its own; an IPv6 address spends its /64's. One IPv6 subscriber commonly
/// gets a whole /64 (or more) and picks addresses in it at will, so a per-address budget
/// would be no budget at all.
pub fn ip_bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                format!("{}/64", std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy, in which
/// case `X-Forwarded-For` is walked from the right (the entries proxies appended)
/// past every trusted hop; the first untrusted address is the client. Entries a
/// client wrote itself sit further left and are never reached.
pub fn client_ip(trusted: &[IpNet], peer: Option<IpAddr>, headers: &HeaderMap) -> IpAddr {
    let peer = peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        client = hop;
        if !is_trusted(hop) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_their_64s_budget_and_ipv4_ones_do_not() {
        let bucket = |s: &str| ip_bucket(s.parse().expect("ip"));
        assert_eq!(bucket("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(
            bucket("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            "2001:db8:1:2::/64"
        );
        assert_ne!(bucket("2001:db8:1:3::1"), bucket("2001:db8:1:2::1"));
        assert_eq!(bucket("203.0.113.9"), "203.0.113.9");
        assert_ne!(bucket("203.0.113.9"), bucket("203.0.113.10"));
        assert_eq!(bucket("::ffff:203.0.113.9"), "203.0.113.9");
    }

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_str(xff).expect("header"),
        );
        h
    }

    #[test]
    fn forwarded_for_is_only_believed_from_trusted_proxies() {
        let trusted = vec![IpNet::parse("10.0.0.0/8").expect("cidr")];
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let outsider: IpAddr = "203.0.113.9".parse().expect("ip");
        // A direct client cannot claim another address.
        assert_eq!(
            client_ip(&trusted, Some(outsider), &headers("1.2.3.4")),
            outsider
        );
        // Through the proxy, the address the proxy appended wins over a spoofed one.
        assert_eq!(
            client_ip(&trusted, Some(proxy), &headers("1.2.3.4, 198.51.100.7")),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
        // No header: the proxy itself.
        assert_eq!(client_ip(&trusted, Some(proxy), &HeaderMap::new()), proxy);
    }
}
