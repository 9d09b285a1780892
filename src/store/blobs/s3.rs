//! Blobs in an S3-compatible service (`[files] storage = "s3"`: AWS S3, MinIO, Ceph,
//! Garage, …) through the `object_store` crate: `<bucket>/<prefix><workspace>/<file id>`.
//! Uploads go through `object_store`'s buffered writer: one PUT for a small file, a
//! multipart upload (aborted on failure) for a large one, never the whole file in memory.

use super::{BlobKey, BlobKeys, BlobStore, ByteStream};
use crate::config::FilesConfig;
use crate::domain::ids::{FileId, WorkspaceId};
use crate::domain::time::Timestamp;
use crate::store::{StoreError, StoreResult};
use anyhow::Context;
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::ObjectStore;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

pub struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl S3Blobs {
    /// Builds the client from `[files]`: `bucket` is required; `endpoint` (for a service
    /// other than AWS), `region`, `path_style` and the credentials, read from the
    /// environment variables the config names, else from the standard `AWS_*` variables.
    pub fn from_config(config: &FilesConfig) -> anyhow::Result<Self> {
        let bucket = config.bucket.as_deref().context("[files] storage = \"s3\" needs `bucket`")?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        builder = builder.with_virtual_hosted_style_request(!config.path_style);
        if let Some(name) = &config.access_key_id_env {
            let value =
                std::env::var(name).with_context(|| format!("[files] access_key_id_env: `{name}` is not set"))?;
            builder = builder.with_access_key_id(value);
        }
        if let Some(name) = &config.secret_access_key_env {
            let value =
                std::env::var(name).with_context(|| format!("[files] secret_access_key_env: `{name}` is not set"))?;
            builder = builder.with_secret_access_key(value);
        }
        let store = builder.build().context("configuring the S3 blob store")?;
        Ok(S3Blobs { store: Arc::new(store), prefix: config.prefix.clone().unwrap_or_default() })
    }

    fn path(&self, key: &BlobKey) -> StoreResult<Path> {
        Ok(Path::from(format!("{}{}", self.prefix, key.path()?)))
    }
}

fn s3_error(error: object_store::Error, key: &BlobKey) -> StoreError {
    match error {
        object_store::Error::NotFound { .. } => StoreError::NotFound { what: "File", id: key.file.as_str().to_owned() },
        other => StoreError::Other(anyhow::Error::new(other).context("the S3 blob store failed")),
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put_blob(&self, key: &BlobKey, mut body: ByteStream<'_>) -> StoreResult<u64> {
        let mut writer = BufWriter::new(self.store.clone(), self.path(key)?);
        let mut written = 0u64;
        let result: StoreResult<()> = async {
            while let Some(piece) = body.next().await {
                let piece =
                    piece.map_err(|e| StoreError::Other(anyhow::Error::new(e).context("reading the upload")))?;
                written += piece.len() as u64;
                writer.put(piece).await.map_err(|e| s3_error(e, key))?;
            }
            writer.shutdown().await.map_err(|e| StoreError::Other(anyhow::Error::new(e).context("S3 upload")))?;
            Ok(())
        }
        .await;
        if let Err(error) = result {
            // A started multipart upload would otherwise keep its parts (and their cost).
            let _ = writer.abort().await;
            return Err(error);
        }
        Ok(written)
    }

    async fn blob(&self, key: &BlobKey) -> StoreResult<ByteStream<'static>> {
        let found = self.store.get(&self.path(key)?).await.map_err(|e| s3_error(e, key))?;
        Ok(Box::pin(found.into_stream().map_err(std::io::Error::other)))
    }

    async fn delete_blob(&self, key: &BlobKey) -> StoreResult<()> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(other) => Err(s3_error(other, key)),
        }
    }

    /// Every object under the prefix named `<workspace>/<file id>` and last modified before
    /// `before`; other objects in the bucket are left out.
    fn blobs_before(&self, before: Timestamp) -> BlobKeys<'_> {
        // A prefix that ends a "directory" narrows the listing; any other is matched below.
        let under = self.prefix.rsplit_once('/').map(|(directory, _)| Path::from(directory));
        let objects = self.store.list(under.as_ref());
        Box::pin(objects.filter_map(move |object| {
            let found = match object {
                Err(error) => Some(Err(StoreError::Other(anyhow::Error::new(error).context("listing the S3 bucket")))),
                Ok(meta) if meta.last_modified.timestamp_micros() < before.micros() => {
                    let name = meta.location.as_ref().strip_prefix(self.prefix.as_str()).unwrap_or_default();
                    name.split_once('/')
                        .map(|(workspace, file)| BlobKey {
                            workspace: WorkspaceId(workspace.to_owned()),
                            file: FileId(file.to_owned()),
                        })
                        // Names that are not blob keys (deeper paths, other tools' objects) stay.
                        .filter(|key| key.path().is_ok_and(|path| path == name))
                        .map(Ok)
                }
                Ok(_) => None,
            };
            std::future::ready(found)
        }))
    }
}
