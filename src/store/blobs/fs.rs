//! Blobs as files in a directory (`[files] storage = "fs"`, and `auto` beside a SQLite
//! file): `<dir>/<workspace>/<file id>`. A blob is written under a temporary name, synced
//! and renamed into place, so a reader never sees a partial file and a crash leaves at most
//! a stray `.partial` file.

use super::{BlobKey, BlobKeys, BlobStore, ByteStream, CHUNK_BYTES};
use crate::domain::ids::{FileId, WorkspaceId};
use crate::domain::time::Timestamp;
use crate::store::{StoreError, StoreResult};
use async_trait::async_trait;
use futures::StreamExt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

pub struct FsBlobs {
    dir: PathBuf,
}

impl FsBlobs {
    /// Uses `dir`, created with the first upload (so a server that stores no file leaves
    /// no directory beside its SQLite file).
    pub fn open(dir: &Path) -> Self {
        FsBlobs { dir: dir.to_path_buf() }
    }

    fn path(&self, key: &BlobKey) -> StoreResult<PathBuf> {
        Ok(self.dir.join(key.path()?))
    }
}

/// A full disk or a read-only directory can clear up; anything else is a fault.
fn io_error(error: std::io::Error, doing: &str) -> StoreError {
    match error.kind() {
        ErrorKind::StorageFull | ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => {
            StoreError::Unavailable(format!("the files directory cannot be written ({doing}): {error}"))
        }
        _ => StoreError::Other(anyhow::Error::new(error).context(format!("files directory: {doing}"))),
    }
}

/// Removes a partial file unless the write completed, also when the write is abandoned
/// midway (the request's future dropped).
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[async_trait]
impl BlobStore for FsBlobs {
    async fn put_blob(&self, key: &BlobKey, mut body: ByteStream<'_>) -> StoreResult<u64> {
        let target = self.path(key)?;
        let parent = target.parent().unwrap_or(&self.dir).to_path_buf();
        tokio::fs::create_dir_all(&parent).await.map_err(|e| io_error(e, "creating a workspace directory"))?;
        let temporary = parent.join(format!(".{}.partial", key.file.as_str()));
        let mut partial = Partial(Some(temporary.clone()));
        let mut file = tokio::fs::File::create(&temporary).await.map_err(|e| io_error(e, "creating a file"))?;
        let mut written = 0u64;
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| StoreError::Other(anyhow::Error::new(e).context("reading the upload")))?;
            file.write_all(&piece).await.map_err(|e| io_error(e, "writing a file"))?;
            written += piece.len() as u64;
        }
        // Synced before the rename and the rename synced before the row is written: after a
        // power loss, a row never names bytes that did not reach the disk.
        file.sync_all().await.map_err(|e| io_error(e, "syncing a file"))?;
        drop(file);
        tokio::fs::rename(&temporary, &target).await.map_err(|e| io_error(e, "renaming a file"))?;
        partial.0 = None;
        if let Ok(directory) = tokio::fs::File::open(&parent).await {
            directory.sync_all().await.map_err(|e| io_error(e, "syncing a directory"))?;
        }
        Ok(written)
    }

    async fn blob(&self, key: &BlobKey) -> StoreResult<ByteStream<'static>> {
        let path = self.path(key)?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| match e.kind() {
            ErrorKind::NotFound => StoreError::NotFound { what: "File", id: key.file.as_str().to_owned() },
            _ => io_error(e, "opening a file"),
        })?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(file, CHUNK_BYTES / 4)))
    }

    async fn delete_blob(&self, key: &BlobKey) -> StoreResult<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_error(e, "removing a file")),
            _ => Ok(()),
        }
    }

    /// Every `<workspace>/<file id>` last written before `before`. The partial files of
    /// writes a crash cut short (as old) are removed on the way: nothing can name them.
    fn blobs_before(&self, before: Timestamp) -> BlobKeys<'_> {
        let before = std::time::UNIX_EPOCH + std::time::Duration::from_micros(before.micros().max(0) as u64);
        let old = move |entry: &std::fs::Metadata| entry.modified().is_ok_and(|at| at < before);
        let listing = |e| io_error(e, "listing the files directory");
        Box::pin(async_stream::try_stream! {
            let mut workspaces = match tokio::fs::read_dir(&self.dir).await {
                Err(e) if e.kind() == ErrorKind::NotFound => return,
                found => found.map_err(listing)?,
            };
            while let Some(workspace) = workspaces.next_entry().await.map_err(listing)? {
                let Ok(workspace_id) = workspace.file_name().into_string() else { continue };
                if !workspace.file_type().await.map_err(listing)?.is_dir() {
                    continue;
                }
                let mut files = tokio::fs::read_dir(workspace.path()).await.map_err(listing)?;
                while let Some(file) = files.next_entry().await.map_err(listing)? {
                    let Ok(name) = file.file_name().into_string() else { continue };
                    if !file.metadata().await.is_ok_and(|m| m.is_file() && old(&m)) {
                        continue;
                    }
                    if name.starts_with('.') {
                        if name.ends_with(".partial") {
                            let _ = tokio::fs::remove_file(file.path()).await;
                        }
                        continue;
                    }
                    yield BlobKey { workspace: WorkspaceId(workspace_id.clone()), file: FileId(name) };
                }
            }
        })
    }
}
