//! Who the client is, by address: the TCP peer, or, only when the peer is one of
//! `[api] trusted-proxies`, the address that proxy says it forwarded for. The limiter, the
//! per-role allowlists and the audit log all use this one address.
//!
//! The forwarding headers (`Forwarded: for=…`, else `X-Forwarded-For`) are read from the right:
//! each trusted proxy appends the address it received from, so the rightmost address that is not
//! a trusted proxy is the client; anything left of it was written by the client and proves
//! nothing. Pure: the caller gives the peer, the trusted networks and the header values.

use ipnet::IpNet;
use std::net::IpAddr;

/// Hops read from the forwarding headers at most; a longer chain is refused.
pub const HOPS_MAX: usize = 32;

/// The client's address. `forwarded` and `x_forwarded_for` are the values of every such header
/// line, in order. Errors (a trusted proxy sent an address that cannot be read) say why, naming
/// the header and the value.
pub fn resolve(
    peer: IpAddr,
    trusted: &[IpNet],
    forwarded: &[&str],
    x_forwarded_for: &[&str],
) -> Result<IpAddr, String> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip.to_canonical()));
    if !is_trusted(peer) {
        return Ok(peer.to_canonical());
    }
    let hops = if !forwarded.is_empty() {
        hops(forwarded, "Forwarded", forwarded_for)?
    } else {
        hops(x_forwarded_for, "X-Forwarded-For", |e| Ok(Some(e)))?
    };
    // A proxy's own request (a health check, say) carries no header: the proxy is the client.
    let Some(leftmost) = hops.first().copied() else {
        return Ok(peer.to_canonical());
    };
    Ok(hops
        .iter()
        .rev()
        .copied()
        .find(|ip| !is_trusted(*ip))
        .unwrap_or(leftmost))
}

/// The addresses of every element of `lines` (comma-separated), left to right.
fn hops(
    lines: &[&str],
    header: &str,
    element: impl Fn(&str) -> Result<Option<&str>, String>,
) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for e in lines.iter().flat_map(|l| l.split(',')) {
        if out.len() >= HOPS_MAX {
            return Err(format!("{header} lists more than {HOPS_MAX} addresses"));
        }
        let e = e.trim();
        let bad = |why: &str| format!("{header} element {:?} {why}", shorten(e));
        let Some(node) = element(e).map_err(|w| bad(&w))? else {
            continue;
        };
        out.push(node_ip(node).ok_or_else(|| bad("is not an IP address"))?);
    }
    Ok(out)
}

/// The `for=` value of one `Forwarded` element (RFC 7239), unquoted; `None` when it has none.
fn forwarded_for(element: &str) -> Result<Option<&str>, String> {
    for pair in element.split(';') {
        let Some((name, value)) = pair.trim().split_once('=') else {
            return Err("is not a list of name=value pairs".into());
        };
        if name.trim().eq_ignore_ascii_case("for") {
            let v = value.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn node_ip(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !(after.is_empty() || port(after.strip_prefix(':')?)) {
            return None;
        }
        return ip
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|v| IpAddr::V6(v).to_canonical());
    }
    let (ip, p) = node.rsplit_once(':')?;
    (port(p))
        .then(|| ip.parse::<std::net::Ipv4Addr>().ok())
        .flatten()
        .map(IpAddr::V4)
}

fn port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

fn shorten(s: &str) -> String {
    crate::audit::printable(&s.chars().take(64).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let got = resolve(ip("203.0.113.9"), &nets(&["10.0.0.0/8"]), &[], &["1.2.3.4"]);
        assert_eq!(got, Ok(ip("203.0.113.9")));
        // No trusted proxies at all: the same.
        assert_eq!(
            resolve(ip("10.0.0.1"), &[], &[], &["1.2.3.4"]),
            Ok(ip("10.0.0.1"))
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = nets(&["10.0.0.0/8"]);
        // The client wrote 6.6.6.6 itself; the proxy appended the real peer 198.51.100.7.
        let got = resolve(ip("10.0.0.2"), &t, &[], &["6.6.6.6, 198.51.100.7"]);
        assert_eq!(got, Ok(ip("198.51.100.7")));
        // Two proxies in a row, over two header lines.
        let got = resolve(
            ip("10.0.0.2"),
            &t,
            &[],
            &["6.6.6.6, 198.51.100.7", "10.1.2.3"],
        );
        assert_eq!(got, Ok(ip("198.51.100.7")));
        // Only proxies: the leftmost.
        let got = resolve(ip("10.0.0.2"), &t, &[], &["10.9.9.9, 10.1.2.3"]);
        assert_eq!(got, Ok(ip("10.9.9.9")));
        // No header: the proxy itself.
        assert_eq!(resolve(ip("10.0.0.2"), &t, &[], &[]), Ok(ip("10.0.0.2")));
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_takes_rfc_7239_forms() {
        let t = nets(&["127.0.0.0/8", "::1/128"]);
        let fwd = [r#"for=6.6.6.6;proto=https, for="[2001:db8::7]:4711";by=10.0.0.1"#];
        let got = resolve(ip("::1"), &t, &fwd, &["1.1.1.1"]);
        assert_eq!(got, Ok(ip("2001:db8::7")));
        let got = resolve(ip("127.0.0.1"), &t, &["For=192.0.2.60:8080"], &[]);
        assert_eq!(got, Ok(ip("192.0.2.60")));
        // An IPv4-mapped peer is the IPv4 address.
        let got = resolve(ip("::ffff:127.0.0.1"), &t, &[], &["192.0.2.1"]);
        assert_eq!(got, Ok(ip("192.0.2.1")));
    }

    #[test]
    fn unreadable_addresses_from_a_trusted_proxy_are_errors_that_name_them() {
        let t = nets(&["127.0.0.1/32"]);
        let e = resolve(ip("127.0.0.1"), &t, &[], &["1.2.3.4, evil"]).unwrap_err();
        assert_eq!(e, r#"X-Forwarded-For element "evil" is not an IP address"#);
        let e = resolve(ip("127.0.0.1"), &t, &["for=unknown"], &[]).unwrap_err();
        assert!(e.contains(r#"Forwarded element "for=unknown""#), "{e}");
        let e = resolve(ip("127.0.0.1"), &t, &["junk"], &[]).unwrap_err();
        assert!(e.contains("name=value"), "{e}");
        let long = vec!["1.2.3.4"; HOPS_MAX + 1].join(",");
        let e = resolve(ip("127.0.0.1"), &t, &[], &[&long]).unwrap_err();
        assert!(e.contains("more than 32"), "{e}");
    }

    proptest! {
        /// Whatever a client writes into the headers, the answer is the peer (untrusted) or an
        /// address some hop wrote, never something else; and a client behind a trusted proxy
        /// cannot make itself anyone but itself.
        #[test]
        fn a_client_cannot_choose_its_address(
            written in proptest::collection::vec(any::<[u8; 4]>(), 0..5),
            real in any::<[u8; 4]>(),
        ) {
            let t = nets(&["10.0.0.0/8"]);
            let real = IpAddr::from(real);
            prop_assume!(!t[0].contains(&real));
            let mut chain: Vec<String> =
                written.iter().map(|o| IpAddr::from(*o).to_string()).collect();
            chain.push(real.to_string());
            let line = chain.join(", ");
            prop_assert_eq!(resolve(ip("10.0.0.5"), &t, &[], &[&line]), Ok(real));
            prop_assert_eq!(resolve(real, &t, &[], &[&line]), Ok(real));
        }

        #[test]
        fn any_header_text_gives_an_answer_or_an_error_never_a_panic(
            s in "\\PC{0,200}",
        ) {
            let t = nets(&["0.0.0.0/0"]);
            let _ = resolve(ip("10.0.0.1"), &t, &[&s], &[]);
            let _ = resolve(ip("10.0.0.1"), &t, &[], &[&s]);
        }
    }
}
