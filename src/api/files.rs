//! `/v1/files*`: the Files API of the official SDKs (upload, list, retrieve, download,
//! signed URL, delete). Uploads stream into the blob store under their own size limit
//! (`[files] max_upload_mb`), not the small JSON limit of the other routes.

use super::auth::Workspace;
use super::extract::{PathParam, QueryParams};
use super::openapi::Errors;
use crate::domain::files::{DeletedFile, FileList, FileObject, SignedUrl};
use crate::domain::ids::FileId;
use crate::engine::files::{NewFile, MAX_EXPIRY_HOURS};
use crate::error::{Error, FieldError, Result};
use crate::store::FileFilter;
use crate::AppState;
use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `max_upload_bytes`: `[files] max_upload_mb`, which the upload enforces on the file
/// itself as it streams; the whole form may be a little larger, for its other fields.
pub fn routes(max_upload_bytes: u64) -> OpenApiRouter<AppState> {
    let form_limit = usize::try_from(max_upload_bytes).unwrap_or(usize::MAX).saturating_add(FORM_OVERHEAD);
    let (schemas, paths, upload) = routes!(upload_file);
    OpenApiRouter::new()
        .routes((schemas, paths, upload.layer(DefaultBodyLimit::max(form_limit))))
        .routes(routes!(list_files))
        .routes(routes!(retrieve_file, delete_file))
        .routes(routes!(download_file))
        .routes(routes!(get_signed_url))
}

/// The form `upload_file` reads; other parts are read past.
#[derive(utoipa::ToSchema)]
#[schema(as = MultiPartBodyParams)]
pub struct UploadForm {
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// Default `fine-tune`.
    pub purpose: Option<String>,
    /// Hours until the file expires, from 1.
    #[schema(minimum = 1)]
    pub expiry: Option<i64>,
    #[schema(pattern = "^(workspace|user)$")]
    pub visibility: Option<String>,
}

/// The longest text form field read (`purpose`, `expiry`, `visibility`).
const MAX_FIELD_BYTES: usize = 1024;

/// What an upload's form may hold beside the file: boundaries, headers, short fields.
const FORM_OVERHEAD: usize = 1024 * 1024;

fn form_error(field: &str, kind: &'static str, msg: impl Into<String>) -> Error {
    Error::invalid(FieldError::new(vec!["body".into(), field.into()], kind, msg))
}

/// A form that could not be read; past the route's limit (`limit_mb` of file and a little
/// more) it is the upload that is too large.
fn multipart_error(error: MultipartError, limit_mb: u64) -> Error {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return Error::FileTooLarge { limit_mb };
    }
    Error::invalid(FieldError::new(vec!["body".into()], "body_error", format!("Invalid multipart body: {error}")))
}

/// A short text field, read at most `MAX_FIELD_BYTES` into memory.
async fn text_field(mut field: Field<'_>, name: &str, limit_mb: u64) -> Result<String> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit_mb))? {
        text.extend_from_slice(&chunk);
        if text.len() > MAX_FIELD_BYTES {
            return Err(form_error(name, "string_too_long", format!("At most {MAX_FIELD_BYTES} bytes")));
        }
    }
    String::from_utf8(text).map_err(|_| form_error(name, "string_type", "Input should be a valid string"))
}

/// `POST /v1/files`: multipart `file` and `purpose` (default `fine-tune`, as upstream); the
/// 3.x SDKs' `expiry` (hours) and `visibility` (`workspace` or `user`) are kept and returned.
/// Fields may come in any order: the bytes are stored as they arrive and named by a row
/// only once the whole form is read and valid.
#[utoipa::path(post, path = "/v1/files", operation_id = "files_api_routes_upload_file", tag = "files",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 200, body = FileObject), Errors))]
#[tracing::instrument(skip_all, fields(file_id))]
async fn upload_file(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    multipart: std::result::Result<Multipart, MultipartRejection>,
) -> Result<Json<FileObject>> {
    let files = &state.engine.files;
    let mut multipart = multipart.map_err(|rejection| {
        Error::invalid(FieldError::new(vec!["body".into()], "body_error", rejection.body_text()))
    })?;
    let limit_mb = files.max_upload_bytes() / (1024 * 1024);
    let mut received = None;
    let mut file = NewFile { purpose: "fine-tune".to_owned(), ..NewFile::default() };
    while let Some(field) = multipart.next_field().await.map_err(|e| multipart_error(e, limit_mb))? {
        match field.name().unwrap_or_default() {
            "file" => {
                if received.is_some() {
                    return Err(form_error("file", "value_error", "Send one file per upload"));
                }
                file.filename = field.file_name().filter(|n| !n.is_empty()).unwrap_or("file").to_owned();
                file.mimetype = field.content_type().map(str::to_owned);
                let body = field.map(|piece| piece.map_err(|e| multipart_error(e, limit_mb)));
                received = Some(files.receive(&ws, body).await?);
            }
            "purpose" => file.purpose = text_field(field, "purpose", limit_mb).await?,
            "expiry" => {
                let text = text_field(field, "expiry", limit_mb).await?;
                let hours: i64 = text
                    .trim()
                    .parse()
                    .map_err(|_| form_error("expiry", "int_parsing", "Input should be a valid integer"))?;
                if hours < 1 {
                    return Err(form_error("expiry", "greater_than_equal", "Input should be at least 1 (hours)"));
                }
                file.expiry_hours = Some(hours);
            }
            "visibility" => {
                let visibility = text_field(field, "visibility", limit_mb).await?;
                if visibility != "workspace" && visibility != "user" {
                    return Err(form_error("visibility", "enum", "Input should be 'workspace' or 'user'"));
                }
                file.visibility = Some(visibility);
            }
            // Anything else is read past (the SDKs send nothing else).
            _ => {}
        }
    }
    let Some(received) = received else {
        return Err(form_error("file", "missing", "Field required"));
    };
    let record = files.register(&ws, received, file, "upload").await?;
    tracing::Span::current().record("file_id", record.id.as_str());
    tracing::info!(bytes = record.bytes, "file uploaded");
    Ok(Json(FileObject::from(&record)))
}

/// `GET /v1/files`: newest first, `page` (from 0) and `page_size`, with `total`; filtered
/// by `purpose`, `search` (in the file name), and any of the `source`, `sample_type` and
/// (3.x) `mimetypes` values given.
#[utoipa::path(get, path = "/v1/files", operation_id = "files_api_routes_list_files", tag = "files",
    params(("page" = Option<i32>, Query, minimum = 0), ("page_size" = Option<i64>, Query, minimum = 1, maximum = 1000),
        ("purpose" = Option<String>, Query), ("search" = Option<String>, Query), ("source" = Option<Vec<String>>, Query),
        ("sample_type" = Option<Vec<String>>, Query), ("mimetypes" = Option<Vec<String>>, Query)),
    responses((status = 200, body = FileList), Errors))]
#[tracing::instrument(skip_all)]
async fn list_files(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    query: QueryParams,
) -> Result<Json<FileList>> {
    let page = query.int("page", Some(0), 0, i64::from(i32::MAX))?.unwrap_or(0);
    let page_size = query.int("page_size", Some(100), 1, 1000)?.unwrap_or(100);
    let filter = FileFilter {
        purpose: query.string("purpose").map(str::to_owned),
        search: query.string("search").filter(|s| !s.is_empty()).map(str::to_owned),
        sources: query.strings("source"),
        sample_types: query.strings("sample_type"),
        mimetypes: query.strings("mimetypes"),
    };
    let (files, total) = state.engine.files.list(&ws, &filter, page, page_size).await?;
    Ok(Json(FileList { object: "list", data: files.iter().map(FileObject::from).collect(), total }))
}

/// `GET /v1/files/{id}`: the File object with `deleted: false`.
#[utoipa::path(get, path = "/v1/files/{file_id}", operation_id = "files_api_routes_retrieve_file", tag = "files",
    params(("file_id" = String, Path)), responses((status = 200, body = FileObject), Errors))]
#[tracing::instrument(skip_all, fields(file_id = %id))]
async fn retrieve_file(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
) -> Result<Json<FileObject>> {
    let record = state.engine.files.file(&ws, &FileId(id)).await?;
    Ok(Json(FileObject { deleted: Some(false), ..FileObject::from(&record) }))
}

/// `DELETE /v1/files/{id}`: 200 with `{"id", "object": "file", "deleted": true}`.
#[utoipa::path(delete, path = "/v1/files/{file_id}", operation_id = "files_api_routes_delete_file", tag = "files",
    params(("file_id" = String, Path)), responses((status = 200, body = DeletedFile), Errors))]
#[tracing::instrument(skip_all, fields(file_id = %id))]
async fn delete_file(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
) -> Result<Json<DeletedFile>> {
    state.engine.files.delete(&ws, &FileId(id.clone())).await?;
    Ok(Json(DeletedFile { id, object: "file", deleted: true }))
}

/// `GET /v1/files/{id}/content`: the bytes, streamed, always as `application/octet-stream`
/// (the SDKs reject any other type). With a signed link's `workspace`, `expires` and
/// `signature` it needs no API key.
#[utoipa::path(get, path = "/v1/files/{file_id}/content", operation_id = "files_api_routes_download_file", tag = "files",
    params(("file_id" = String, Path), ("workspace" = Option<String>, Query), ("expires" = Option<String>, Query), ("signature" = Option<String>, Query)),
    security((), ("bearer" = [])),
    responses((status = 200, description = "The file's bytes.", content_type = "application/octet-stream", body = Vec<u8>), Errors))]
#[tracing::instrument(skip_all, fields(file_id = %id))]
async fn download_file(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
    query: QueryParams,
    headers: HeaderMap,
) -> Result<Response> {
    let files = &state.engine.files;
    let id = FileId(id);
    let ws = match query.string("signature") {
        Some(signature) => {
            let (workspace, expires) = (query.string("workspace"), query.string("expires"));
            files.check_link(&id, workspace.unwrap_or_default(), expires.unwrap_or_default(), signature)?
        }
        None => Workspace::of(&headers, &state)?.0,
    };
    let (record, bytes) = files.content(&ws, &id).await?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(record.bytes));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", safe_name(&record.filename)))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok((headers, Body::from_stream(bytes)).into_response())
}

/// A file name fit for a quoted header value: ASCII letters, digits, `.`, `-`, `_`.
fn safe_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}

/// `GET /v1/files/{id}/url?expiry=H`: a link to the content that works without a key for
/// `expiry` hours (1 to 168, default 24).
#[utoipa::path(get, path = "/v1/files/{file_id}/url", operation_id = "files_api_routes_get_signed_url", tag = "files",
    params(("file_id" = String, Path), ("expiry" = Option<i64>, Query, minimum = 1, maximum = 168)),
    responses((status = 200, body = SignedUrl), Errors))]
#[tracing::instrument(skip_all, fields(file_id = %id))]
async fn get_signed_url(
    State(state): State<AppState>,
    Workspace(ws): Workspace,
    PathParam(id): PathParam<String>,
    query: QueryParams,
    headers: HeaderMap,
) -> Result<Json<SignedUrl>> {
    let expiry = query.int("expiry", Some(24), 1, MAX_EXPIRY_HOURS)?.unwrap_or(24);
    let files = &state.engine.files;
    let path = files.signed_path(&ws, &FileId(id), expiry).await?;
    let base = match files.public_url() {
        Some(base) => base.to_owned(),
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
            format!("{scheme}://{host}")
        }
    };
    Ok(Json(SignedUrl { url: format!("{base}{path}") }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_file_name_in_a_header_keeps_only_safe_characters() {
        assert_eq!(super::safe_name("a b\"c/é.png"), "a_b_c__.png");
    }
}
