//! Bearer keys and workspaces. Each configured key is its own workspace, identified by a
//! digest of the key so that no key is ever stored or logged. Without keys, every request
//! belongs to one default workspace.

use crate::domain::ids::WorkspaceId;
use crate::error::Error;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub struct KeyRing {
    /// SHA-256 digests of the accepted keys, each with its workspace (computed once).
    keys: Vec<([u8; 32], WorkspaceId)>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl KeyRing {
    pub fn new(keys: &[String]) -> Self {
        let keys = keys
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .map(|k| {
                let digest = digest(k);
                // The workspace id is a digest prefix, not the key: safe to store and to log.
                (digest, WorkspaceId(format!("ws_{}", hex::encode(&digest[..16]))))
            })
            .collect();
        KeyRing { keys }
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys are accepted.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The workspace of `presented`, if it is one of the keys. Every configured key is
    /// compared, in constant time, whatever matches first.
    pub fn workspace_of(&self, presented: &str) -> Option<WorkspaceId> {
        let candidate = digest(presented);
        let mut found: Option<&WorkspaceId> = None;
        for (known, workspace) in &self.keys {
            if bool::from(known.ct_eq(&candidate)) {
                found = Some(workspace);
            }
        }
        found.cloned()
    }
}

/// The workspace a request acts in, resolved from `Authorization: Bearer <key>`.
pub struct Workspace(pub WorkspaceId);

impl FromRequestParts<AppState> for Workspace {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        Workspace::of(&parts.headers, state)
    }
}

impl Workspace {
    /// The workspace of a request's `Authorization` header (for handlers that accept
    /// another proof as well, such as a signed link).
    pub fn of(headers: &HeaderMap, state: &AppState) -> Result<Self, Error> {
        if state.keys.is_open() {
            return Ok(Workspace(WorkspaceId::default_workspace()));
        }
        let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let (scheme, key) = header.trim().split_once(' ').unwrap_or(("", ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::Unauthorized);
        }
        state.keys.workspace_of(key.trim()).map(Workspace).ok_or(Error::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_its_own_workspace_and_other_keys_have_none() {
        let ring = KeyRing::new(&["alpha".to_owned(), "beta".to_owned()]);

        let a = ring.workspace_of("alpha").unwrap();
        let b = ring.workspace_of("beta").unwrap();

        assert_ne!(a, b);
        assert_eq!(ring.workspace_of("gamma"), None);
        assert!(!a.as_str().contains("alpha"));
    }

    #[test]
    fn blank_keys_in_the_list_are_ignored() {
        let ring = KeyRing::new(&[" ".to_owned(), String::new()]);

        assert!(ring.is_open());
    }
}
