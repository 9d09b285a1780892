//! `Idempotency-Key`: a retried request gets the first successful answer instead of running
//! again (a turn never runs twice). The keys live in the store, so every replica honours
//! them; HTTP capture and replay live in `api::idempotency`.

use super::Engine;
use crate::domain::time::Timestamp;
use crate::error::Result;
use crate::store::{ClaimTimes, KeyClaim, KeyUse, StoredAnswer};
use std::time::Duration;

/// A claim older than this was left by a process that died: a retry takes it over. Longer
/// than any turn can run (rounds × the upstream read timeout stay well below it).
const ABANDONED_AFTER: Duration = Duration::from_secs(30 * 60);

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

    /// Forgets a claim whose request failed, so that a retry runs it again.
    pub async fn release_key(&self, key: KeyUse<'_>) -> Result<()> {
        Ok(self.store.release_key(key).await?)
    }

    /// Deletes expired keys (run now and then by the server).
    pub async fn purge_keys(&self) -> Result<u64> {
        Ok(self.store.purge_keys(Timestamp::now()).await?)
    }
}
