//! Outbound calls to caller-given URLs: the private-address check and a client pinned to
//! the checked address.

use std::time::Duration;

/// Loopback, private, link-local, shared (CGNAT), benchmarking, reserved, multicast,
/// unspecified and other non-public addresses, including IPv4 addresses carried inside IPv6
/// (mapped, compatible, NAT64 64:ff9b::/96 and 6to4 2002::/16).
pub fn is_private(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
                // IETF protocol assignments (192.0.0.0/24), benchmarking (198.18.0.0/15),
                // reserved (240.0.0.0/4).
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            // Translation prefixes reach whatever IPv4 address they carry, internal ones too:
            // NAT64 (64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16), IPv4-compatible (::/96).
            if (seg[0] == 0x64 && seg[1] == 0xff9b) || seg[0] == 0x2002 || seg[..6].iter().all(|&x| x == 0) {
                return true;
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                // Documentation (2001:db8::/32) and Teredo (2001::/32), which tunnels IPv4.
                || (seg[0] == 0x2001 && (seg[1] == 0x0db8 || seg[1] == 0))
        }
    }
}

/// Longest an outbound host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for one outbound request to `url` (webhooks, fetched talk sources). Unless
/// `allow_private`, the host is resolved here, refused when any address is private, and the
/// connection pinned to the checked address (so a DNS answer cannot change between the check
/// and the connect).
pub async fn outbound_client(
    client: &reqwest::Client,
    url: &reqwest::Url,
    allow_private: bool,
) -> Result<reqwest::Client, String> {
    if allow_private {
        return Ok(client.clone());
    }
    let host = url.host_str().ok_or("the URL has no host")?.trim_matches(['[', ']']).to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    // The system resolver has no deadline of its own that the caller controls.
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
        .await
        .map_err(|_| format!("cannot resolve {host}: no answer in {} s", RESOLVE_TIMEOUT.as_secs()))?;
    let addrs: Vec<std::net::SocketAddr> = lookup.map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
    let Some(addr) = addrs.first().copied() else { return Err(format!("{host} has no address")) };
    if addrs.iter().any(|a| is_private(a.ip())) {
        return Err(format!("{host} resolves to a private address ({}); refused", addr.ip()));
    }
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        // A proxy would resolve the name again (and could reach what the check refused).
        .no_proxy()
        .resolve(&host, addr)
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            // NAT64, 6to4 and IPv4-compatible forms of the metadata address.
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::a9fe:a9fe",
            "198.18.0.1",
            "198.19.255.1",
            "192.0.0.8",
            "240.0.0.1",
            "255.255.255.254",
            "224.0.0.1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "198.20.0.1", "2001:4860::8888"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
