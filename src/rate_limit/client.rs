//! Who spends a per-address budget: the client's address behind trusted proxies, and
//! the bucket an address belongs to. Used by both transports (HTTP requests and
//! Socket.IO handshakes spend the same per-address budget).

use std::net::IpAddr;

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};

use crate::config::IpNet;
use crate::listener::PeerAddr;

/// The budget bucket ([`ip_bucket`]) of the client behind a request: its TCP peer
/// (from the listener's connection info) and `X-Forwarded-For` as [`client_ip`] reads
/// them.
pub fn bucket_of(trusted: &[IpNet], extensions: &Extensions, headers: &HeaderMap) -> String {
    let peer = extensions
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0.ip());
    ip_bucket(client_ip(trusted, peer, headers))
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

    use axum::http::HeaderValue;

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
