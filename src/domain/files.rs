//! Wire types of the Files API: the File object (`created_at` in Unix seconds, unlike the
//! RFC 3339 times elsewhere), its list, the deletion answer and the signed link. Schema
//! names are the current hosted API's (the 3.x SDKs' models; 1.9.x named them `…Out`).

use serde::Serialize;

/// The File object. Every SDK requires the first eight members; the rest may be null.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = GetFileResponse)]
pub struct FileObject {
    pub id: String,
    pub object: &'static str,
    pub bytes: i64,
    pub created_at: i64,
    pub filename: String,
    pub purpose: String,
    pub sample_type: String,
    pub source: String,
    /// Only on `GET /v1/files/{id}` (always `false` there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    pub num_lines: Option<i64>,
    pub mimetype: Option<String>,
    pub signature: Option<String>,
    pub expires_at: Option<i64>,
    pub visibility: Option<String>,
}

/// `GET /v1/files`: `total` always, which 1.9.11 requires.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ListFilesResponse)]
pub struct FileList {
    pub object: &'static str,
    pub data: Vec<FileObject>,
    pub total: i64,
}

/// `DELETE /v1/files/{id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = DeleteFileResponse)]
pub struct DeletedFile {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}

/// `GET /v1/files/{id}/url`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = GetSignedURLResponse)]
pub struct SignedUrl {
    pub url: String,
}
