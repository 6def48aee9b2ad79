//! API keys: the admin key and client keys with tiers, compared in constant time.
//!
//! A key is only ever read from the `X-API-Key` header, never from the query string, where
//! it would end up in proxy logs and browser history.

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::extract::{AdminKey, ClientKey};
use super::state::AppState;
use crate::config::Config;
use crate::secret::{Secret, fingerprint};

/// Every key herald accepts.
#[derive(Debug, Clone)]
pub struct KeyRing {
    admin: Secret,
    clients: Vec<crate::config::ClientKey>,
}

impl KeyRing {
    pub fn from_config(config: &Config) -> Self {
        Self {
            admin: config.api_access_key.clone(),
            clients: config.api_keys.clone(),
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

/// Applied to the whole admin router, so no admin route can forget the check.
pub async fn require_admin_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    match AdminKey::from_request_parts(&mut parts, &state).await {
        Ok(key) => {
            parts.extensions.insert(key);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(err) => err.into_response(),
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
