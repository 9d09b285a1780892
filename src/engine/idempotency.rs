//! `Idempotency-Key`: a retried request gets the first successful answer instead of running
//! again (a turn never runs twice). The keys live in the store, so every replica honours
//! them; HTTP capture and replay live in `api::idempotency`.

use super::Engine;
use crate::domain::time::Timestamp;
use crate::error::Result;
use crate::store::{ClaimTimes, KeyClaim, KeyUse, StoredAnswer};
use std::time::Duration;

/// How often the process running a claimed request says it still runs.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// A claim not touched for this long was left by a process that died (or lost its
/// database for as long): a retry takes it over instead of waiting for an answer that
/// never comes.
const ABANDONED_AFTER: Duration = Duration::from_secs(30);

impl Engine {
    /// Claims the key for this use, or says who holds it.
    pub async fn claim_key(&self, key: KeyUse<'_>) -> Result<KeyClaim> {
        let now = Timestamp::now();
        let times = ClaimTimes {
            now,
            expires_at: now.plus(self.idempotency_ttl),
            abandoned_before: now.minus(ABANDONED_AFTER),
        };
        Ok(self.store.claim_key(key, times).await?)
    }

    /// Keeps a successful answer for the key's retries.
    pub async fn finish_key(&self, key: KeyUse<'_>, answer: &StoredAnswer) -> Result<()> {
        Ok(self.store.finish_key(key, answer).await?)
    }

    /// Says the claimed request still runs (every `HEARTBEAT`).
    pub async fn touch_key(&self, key: KeyUse<'_>) -> Result<()> {
        Ok(self.store.touch_key(key, Timestamp::now()).await?)
    }

    /// Forgets a claim whose request failed, so that a retry runs it again.
    pub async fn release_key(&self, key: KeyUse<'_>) -> Result<()> {
        Ok(self.store.release_key(key).await?)
    }

    /// Deletes expired keys (run now and then by the server).
    pub async fn purge_keys(&self) -> Result<u64> {
        Ok(self.store.purge_keys(Timestamp::now()).await?)
    }
}
