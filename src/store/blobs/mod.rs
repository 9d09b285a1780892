//! Blob stores: where the bytes of files live, apart from their metadata rows (DESIGN
//! decision 9). `[files] storage` picks one at start-up: a directory (`fs.rs`), an
//! S3-compatible service (`s3.rs`), or the database itself, implemented by the SQL stores
//! (`sqlite.rs`, `postgres.rs`) as numbered chunks of `CHUNK_BYTES`.
//!
//! Bytes move as streams both ways, so neither an upload nor a download is ever held whole
//! in memory. A failed or abandoned write leaves nothing under the blob's key (a directory's
//! partial file and the database's chunks are removed; S3 aborts its multipart upload).

pub mod fs;
pub mod s3;

use super::{StoreError, StoreResult};
use crate::domain::ids::{FileId, WorkspaceId};
use crate::domain::time::Timestamp;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;

/// Bytes as they arrive or leave; an `Err` from a body being written aborts the write.
pub type ByteStream<'a> = BoxStream<'a, std::io::Result<Bytes>>;

/// Blobs found by a listing, as it goes.
pub type BlobKeys<'a> = BoxStream<'a, StoreResult<BlobKey>>;

/// The size of the database's chunks (and of a directory's read buffer's multiple): small
/// enough that a request holds little memory, large enough that a big file is few rows.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Which blob: a file of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobKey {
    pub workspace: WorkspaceId,
    pub file: FileId,
}

impl BlobKey {
    pub fn new(workspace: &WorkspaceId, file: &FileId) -> Self {
        BlobKey { workspace: workspace.clone(), file: file.clone() }
    }

    /// `workspace/file`, for the stores that name blobs by path. Both parts are ids palaver
    /// made (a key digest, a UUID), so they hold no `/` or `..`; checked all the same.
    pub fn path(&self) -> StoreResult<String> {
        let safe = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if safe(self.workspace.as_str()) && safe(self.file.as_str()) {
            Ok(format!("{}/{}", self.workspace.as_str(), self.file.as_str()))
        } else {
            Err(super::StoreError::Other(anyhow::anyhow!(
                "unsafe blob name `{}/{}`",
                self.workspace.as_str(),
                self.file.as_str()
            )))
        }
    }
}

/// Where file bytes are kept.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Writes `body` as the blob `key` and returns its size. All or nothing: when `body`
    /// yields an error, or the storage fails, what was written is removed and the error
    /// returned.
    async fn put_blob(&self, key: &BlobKey, body: ByteStream<'_>) -> StoreResult<u64>;

    /// The blob's bytes, read as they are sent. `NotFound` when there is no such blob.
    async fn blob(&self, key: &BlobKey) -> StoreResult<ByteStream<'static>>;

    /// Removes the blob; one that is already gone is fine.
    async fn delete_blob(&self, key: &BlobKey) -> StoreResult<()>;

    /// The blobs written before `before`, for the sweep of bytes that no file names (a
    /// crash between an upload's bytes and its row leaves them). A store may leave out
    /// blobs it knows a file names; the sweep checks the others against the files.
    fn blobs_before(&self, before: Timestamp) -> BlobKeys<'_>;
}

/// A table of numbered chunks (the database as blob store): what each dialect supplies.
/// Writing and reading a whole blob over it is written once, below.
#[async_trait]
pub(crate) trait ChunkTable: Clone + Send + Sync + 'static {
    async fn insert_chunk(&self, key: &BlobKey, seq: i64, chunk: Bytes) -> StoreResult<()>;

    /// Chunk `seq` of the blob; `None` past the last.
    async fn chunk(&self, key: &BlobKey, seq: i64) -> StoreResult<Option<Bytes>>;

    async fn delete_chunks(&self, key: &BlobKey) -> StoreResult<()>;

    /// Up to `limit` blobs whose first chunk was written before `before` (or before chunks
    /// had times) and that no file row names.
    async fn unnamed_chunks(&self, before: Timestamp, limit: i64) -> StoreResult<Vec<BlobKey>>;
}

/// The most unnamed blobs one sweep of the database removes: they come only from crashes,
/// and the next sweep takes the rest.
const UNNAMED_PER_SWEEP: i64 = 1000;

/// One short write per chunk, no connection or lock held between them: other requests go
/// between the chunks of a large upload.
#[async_trait]
impl<T: ChunkTable> BlobStore for T {
    async fn put_blob(&self, key: &BlobKey, body: ByteStream<'_>) -> StoreResult<u64> {
        let mut chunks = rechunk(body, CHUNK_BYTES);
        let mut written = 0u64;
        let mut seq = 0i64;
        let result: StoreResult<()> = async {
            while let Some(chunk) = chunks.next().await {
                let chunk =
                    chunk.map_err(|e| StoreError::Other(anyhow::Error::new(e).context("reading the upload")))?;
                written += chunk.len() as u64;
                self.insert_chunk(key, seq, chunk).await?;
                seq += 1;
            }
            Ok(())
        }
        .await;
        if let Err(error) = result {
            let _ = self.delete_chunks(key).await;
            return Err(error);
        }
        Ok(written)
    }

    async fn blob(&self, key: &BlobKey) -> StoreResult<ByteStream<'static>> {
        // The first chunk is read now, so a missing blob is a `NotFound` rather than a
        // stream that fails after the response started.
        let Some(first) = self.chunk(key, 0).await? else {
            return Err(StoreError::NotFound { what: "File", id: key.file.as_str().to_owned() });
        };
        let (store, key) = (self.clone(), key.clone());
        Ok(Box::pin(async_stream::try_stream! {
            yield first;
            let mut seq = 1;
            while let Some(chunk) = store.chunk(&key, seq).await.map_err(std::io::Error::other)? {
                yield chunk;
                seq += 1;
            }
        }))
    }

    async fn delete_blob(&self, key: &BlobKey) -> StoreResult<()> {
        self.delete_chunks(key).await
    }

    fn blobs_before(&self, before: Timestamp) -> BlobKeys<'_> {
        Box::pin(async_stream::try_stream! {
            for key in self.unnamed_chunks(before, UNNAMED_PER_SWEEP).await? {
                yield key;
            }
        })
    }
}

/// `body` cut into chunks of exactly `size` bytes (the last one shorter), and always at
/// least one chunk, empty for an empty body, so that a stored blob always has a first row.
pub(crate) fn rechunk(mut body: ByteStream<'_>, size: usize) -> ByteStream<'_> {
    Box::pin(async_stream::try_stream! {
        let mut buffer = BytesMut::new();
        let mut yielded = false;
        while let Some(piece) = body.next().await {
            let piece = piece?;
            buffer.extend_from_slice(&piece);
            while buffer.len() >= size {
                yielded = true;
                yield buffer.split_to(size).freeze();
            }
        }
        if !buffer.is_empty() || !yielded {
            yield buffer.freeze();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn chunks(pieces: Vec<&'static [u8]>, size: usize) -> Vec<Vec<u8>> {
        let body: ByteStream<'static> =
            Box::pin(futures::stream::iter(pieces.into_iter().map(|p| Ok(Bytes::from_static(p)))));
        rechunk(body, size).map(|c| c.unwrap().to_vec()).collect().await
    }

    #[tokio::test]
    async fn a_body_is_cut_into_chunks_of_the_size_whatever_its_pieces() {
        assert_eq!(
            chunks(vec![b"abc", b"defg", b"h"], 3).await,
            vec![b"abc".to_vec(), b"def".to_vec(), b"gh".to_vec()]
        );
        assert_eq!(chunks(vec![b"abcdef"], 3).await, vec![b"abc".to_vec(), b"def".to_vec()]);
    }

    #[tokio::test]
    async fn an_empty_body_is_one_empty_chunk() {
        assert_eq!(chunks(vec![], 3).await, vec![Vec::<u8>::new()]);
    }

    #[test]
    fn a_blob_path_refuses_separators() {
        let key = BlobKey::new(&WorkspaceId("ws_1".into()), &FileId("../x".into()));

        assert!(key.path().is_err());
        assert_eq!(BlobKey::new(&WorkspaceId("ws_1".into()), &FileId("a-b".into())).path().unwrap(), "ws_1/a-b");
    }
}
