//! Who a request comes from, for rate limiting.
//!
//! A valid API key identifies its holder (only a hash of it is kept); anything else is
//! identified by its address: the peer, or the client named in `X-Forwarded-For` when the
//! peer is a trusted proxy. IPv6 addresses count per /64, since one host usually holds a
//! whole /64. An invalid key or a forwarded header from an untrusted peer is ignored, so
//! neither can be used to dodge a limit.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use herald_actors::limiter;
use http::HeaderMap;

use crate::config::{IpBlock, canonical};
use crate::keys::KeyRing;
use crate::ratelimit::policies::DEFAULT_TIER;

/// Who is limited. Displays as `key:<fingerprint>`, an IPv4 address, or an IPv6 /64
/// (`2001:db8:1:2::/64`): the form operators use to reset a client, and the form its
/// limiter key is hashed from (see [`ClientId::key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientId {
    Key(String),
    /// IPv4 as is; IPv6 already reduced to its /64.
    Addr(IpAddr),
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(fingerprint) => write!(f, "key:{fingerprint}"),
            Self::Addr(IpAddr::V4(v4)) => v4.fmt(f),
            Self::Addr(IpAddr::V6(prefix)) => write!(f, "{prefix}/64"),
        }
    }
}

impl PartialEq<&str> for ClientId {
    fn eq(&self, other: &&str) -> bool {
        self.to_string().as_str() == *other
    }
}

impl ClientId {
    /// The limiter key of this client in `group`: the same as
    /// `limiter::key(group, &self.to_string())`, without building the string.
    pub fn key(&self, group: u8) -> u64 {
        match self {
            // The common case, written out without the formatting machinery.
            Self::Addr(IpAddr::V4(v4)) => {
                let mut dotted = [0u8; 15];
                let mut len = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        dotted[len] = b'.';
                        len += 1;
                    }
                    let mut buffer = itoa::Buffer::new();
                    let digits = buffer.format(octet).as_bytes();
                    dotted[len..len + digits.len()].copy_from_slice(digits);
                    len += digits.len();
                }
                limiter::key(
                    group,
                    std::str::from_utf8(&dotted[..len]).unwrap_or_default(),
                )
            }
            _ => limiter::key_of(group, self),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: ClientId,
    pub tier: Cow<'static, str>,
}

impl ClientId {
    /// A form safe for logs: key fingerprints as they are, addresses with the host part
    /// hidden.
    pub fn masked(&self) -> String {
        match self {
            Self::Addr(IpAddr::V4(v4)) => {
                let [a, b, c, _] = v4.octets();
                format!("{a}.{b}.{c}.x")
            }
            Self::Key(_) | Self::Addr(IpAddr::V6(_)) => self.to_string(),
        }
    }
}

impl Client {
    /// [`ClientId::masked`].
    pub fn masked(&self) -> String {
        self.id.masked()
    }
}

/// The address as a limiter identity: IPv4 as is, IPv6 reduced to its /64.
pub fn address_identity(addr: IpAddr) -> ClientId {
    ClientId::Addr(match canonical(addr) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
    })
}

pub fn identify(headers: &HeaderMap, peer: IpAddr, keys: &KeyRing, trusted: &[IpBlock]) -> Client {
    if let Some(key) = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .and_then(|presented| keys.identify(presented))
    {
        return Client {
            id: ClientId::Key(key.fingerprint),
            tier: Cow::Owned(key.tier),
        };
    }
    Client {
        id: address_identity(client_address(headers, peer, trusted)),
        tier: Cow::Borrowed(DEFAULT_TIER),
    }
}

/// Says once per process that a peer sent `X-Forwarded-For` without being a trusted proxy:
/// behind a proxy or load balancer that `TRUSTED_PROXIES` does not name, every client is
/// counted as the proxy and all share one window, which shows only as refusals.
fn untrusted_proxy(peer: IpAddr) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            peer = %address_identity(peer).masked(),
            "a request came with X-Forwarded-For from a peer not in TRUSTED_PROXIES: it is \
             limited as that peer's address. Behind a proxy or load balancer, set \
             TRUSTED_PROXIES to its addresses, or every client shares its rate-limit window"
        );
    }
}

/// The peer, or — only when the peer is a trusted proxy — the nearest address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
fn client_address(headers: &HeaderMap, peer: IpAddr, trusted: &[IpBlock]) -> IpAddr {
    let is_trusted = |addr: IpAddr| trusted.iter().any(|block| block.contains(addr));
    if !is_trusted(peer) {
        if headers.contains_key("x-forwarded-for") {
            untrusted_proxy(peer);
        }
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for hop in hops.rev() {
        match hop.parse::<IpAddr>() {
            Ok(addr) => {
                client = addr;
                if !is_trusted(addr) {
                    break;
                }
            }
            // A garbled entry: stop at the last address we could trust.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn ring() -> KeyRing {
        let config = crate::config::Config::from_lookup(&|k| match k {
            "API_ACCESS_KEY" => Some("admin".into()),
            "SECRET_KEY" => Some("s".into()),
            "API_KEYS" => Some("client-key:pro".into()),
            _ => None,
        })
        .unwrap();
        let _ = Secret::new("unused");
        KeyRing::from_config(&config)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_valid_key_identifies_by_its_hash_and_tier() {
        let client = identify(
            &headers(&[("x-api-key", "client-key")]),
            "10.0.0.1".parse().unwrap(),
            &ring(),
            &[],
        );
        let id = client.id.to_string();
        assert!(id.starts_with("key:") && !id.contains("client-key"));
        assert_eq!(client.tier, "pro");
    }

    #[test]
    fn an_invalid_key_falls_back_to_the_address() {
        let client = identify(
            &headers(&[("x-api-key", "made-up")]),
            "10.0.0.1".parse().unwrap(),
            &ring(),
            &[],
        );
        assert_eq!(client.id, "10.0.0.1");
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        let client = identify(&h, "10.0.0.1".parse().unwrap(), &ring(), &[]);
        assert_eq!(client.id, "10.0.0.1");
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_up_to_the_first_untrusted_hop() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        let client = identify(&h, "10.0.0.1".parse().unwrap(), &ring(), &trusted);
        assert_eq!(
            client.id, "1.2.3.4",
            "the spoofable left part is not believed"
        );
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a = address_identity("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = address_identity("2001:db8:1:2:bbbb::9".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(
            address_identity("::ffff:1.2.3.4".parse().unwrap()),
            "1.2.3.4"
        );
    }

    #[test]
    fn a_clients_key_is_the_key_of_its_reset_form() {
        for id in [
            address_identity("203.0.113.7".parse().unwrap()),
            address_identity("2001:db8:1:2:aaaa::1".parse().unwrap()),
            ClientId::Key("ab12cd".into()),
        ] {
            assert_eq!(id.key(1), limiter::key(1, &id.to_string()), "{id}");
        }
    }

    #[test]
    fn masked_forms_hide_the_host() {
        let v4 = Client {
            id: address_identity("203.0.113.7".parse().unwrap()),
            tier: "default".into(),
        };
        assert_eq!(v4.masked(), "203.0.113.x");
    }
}
