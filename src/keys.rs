//! API keys: the admin key and client keys with tiers, compared in constant time.

use crate::config::Config;
use crate::secret::{Secret, fingerprint};

/// A client or admin key (`X-API-Key`) that matched, with the tier it belongs to.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// A short non-reversible name of the key, for audit rows and limiter keys.
    pub fingerprint: String,
    pub tier: String,
    pub admin: bool,
}

/// Every key herald accepts.
#[derive(Debug, Clone)]
pub struct KeyRing {
    admin: Secret,
    clients: Vec<crate::config::ClientKey>,
}

impl KeyRing {
    pub fn from_config(config: &Config) -> Self {
        Self {
            admin: config.keys.api_access_key.clone(),
            clients: config.keys.api_keys.clone(),
        }
    }

    /// Which key `presented` is, if any. Every configured key is compared, each in constant
    /// time, so the time taken does not tell which key came close.
    pub fn identify(&self, presented: &str) -> Option<ClientKey> {
        let admin = self.admin.matches(presented);
        let mut tier = None;
        for client in &self.clients {
            if client.key.matches(presented) && tier.is_none() {
                tier = Some(client.tier.clone());
            }
        }
        if admin {
            return Some(ClientKey {
                fingerprint: fingerprint(presented),
                tier: "admin".to_owned(),
                admin: true,
            });
        }
        tier.map(|tier| ClientKey {
            fingerprint: fingerprint(presented),
            tier,
            admin: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing {
            admin: Secret::new("admin-key"),
            clients: vec![crate::config::ClientKey {
                key: Secret::new("client-key"),
                tier: "pro".into(),
            }],
        }
    }

    #[test]
    fn identifies_admin_and_client_keys() {
        let ring = ring();
        assert!(ring.identify("admin-key").unwrap().admin);
        let client = ring.identify("client-key").unwrap();
        assert!(!client.admin);
        assert_eq!(client.tier, "pro");
        assert!(ring.identify("admin-ke").is_none());
        assert!(ring.identify("").is_none());
    }
}
