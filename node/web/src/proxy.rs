//! Which address a request came from when a reverse proxy stands in front of the node.
//!
//! Behind nginx every request's TCP peer is the proxy, so login throttling keyed on it would
//! treat the whole hospital as one client. The operator names the proxies it trusts
//! (`--trusted-proxy IP`, repeatable); for a request from one of them the client is the
//! right-most address in `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends
//! the address it received from, so anything to the left could be forged by the client). From
//! any other peer `X-Forwarded-For` is ignored: a client cannot pick its own address.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// One entry of `X-Forwarded-For`: an address, perhaps with a port (`1.2.3.4:5678`,
/// `[::1]:5678`), in canonical form (an IPv4 address mapped into IPv6 is the IPv4 address).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let address = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(address.to_canonical())
}

/// The client's address for a request from `peer`.
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer = peer.ip().to_canonical();
    let is_trusted = |address: &IpAddr| trusted.iter().any(|t| t.to_canonical() == *address);
    if !is_trusted(&peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    // From the right: each of our proxies appended what it saw; the first entry that is none of
    // them is the client. Anything further left was written by the client and is not read.
    for entry in entries.iter().rev() {
        match parse_entry(entry) {
            Some(address) if is_trusted(&address) => continue,
            Some(address) => return address,
            // Our proxy writes addresses: garbage here came from elsewhere.
            None => return peer,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_a_trusted_proxy_may_say_who_the_client_is() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let from_proxy = SocketAddr::new(proxy, 40000);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7"),
        );
        assert_eq!(
            client_address(from_proxy, &headers, &[proxy]).to_string(),
            "198.51.100.7",
            "the right-most address, the one our proxy saw; the left one may be forged"
        );
        assert_eq!(
            client_address(from_proxy, &headers, &[]),
            proxy,
            "no trusted proxy: the header is ignored"
        );
        let stranger = SocketAddr::new("192.0.2.1".parse().unwrap(), 1);
        assert_eq!(
            client_address(stranger, &headers, &[proxy]).to_string(),
            "192.0.2.1"
        );
        headers.insert("x-forwarded-for", HeaderValue::from_static("junk"));
        assert_eq!(client_address(from_proxy, &headers, &[proxy]), proxy);
        // Garbage the client put on the left does not hide the address our proxy appended.
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("junk, 198.51.100.7:5123"),
        );
        assert_eq!(
            client_address(from_proxy, &headers, &[proxy]).to_string(),
            "198.51.100.7"
        );
        // A node listening on [::] sees IPv4 peers as mapped addresses.
        let mapped = SocketAddr::new("::ffff:10.0.0.2".parse().unwrap(), 1);
        assert_eq!(
            client_address(mapped, &headers, &[proxy]).to_string(),
            "198.51.100.7"
        );
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.7, 10.0.0.2"),
        );
        assert_eq!(
            client_address(from_proxy, &headers, &[proxy]).to_string(),
            "198.51.100.7",
            "a chain of trusted proxies is skipped"
        );
    }
}
