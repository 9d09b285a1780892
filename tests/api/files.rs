//! The Files API: uploads stream into the configured blob store (a directory, the database,
//! or an S3 service), downloads stream back as `application/octet-stream`, signed links
//! work without a key until they expire, and every file belongs to its workspace.

use crate::helpers::{json_of, Options, TestApp};
use hmac::{Hmac, Mac};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use sha2::Sha256;

/// The key that signs file links in the tests that forge links (a test must know it).
const SECRET_ENV: &str = "PALAVER_TEST_FILES_SIGNING_SECRET";
const SECRET: &str = "a-test-secret-of-some-length";

/// A multipart body of `(name, file name, bytes)` parts and its content type, written out
/// by hand so the tests control every byte the server reads.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "palaver-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, filename, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(filename) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => {
                body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes())
            }
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload_parts(app: &TestApp, parts: &[(&str, Option<&str>, &[u8])]) -> Response {
    let (content_type, body) = multipart(parts);
    app.request(Method::POST, "/v1/files").header("content-type", content_type).body(body).send().await.unwrap()
}

async fn upload(app: &TestApp, filename: &str, bytes: &[u8]) -> Value {
    json_of(upload_parts(app, &[("purpose", None, b"ocr"), ("file", Some(filename), bytes)]).await, 200).await
}

/// Bytes that are not all alike, so an out-of-order chunk would show.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7919) % 251) as u8).collect()
}

async fn download(app: &TestApp, path: &str) -> (u16, String, Vec<u8>) {
    let response = app.get(path).await;
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, response.bytes().await.unwrap().to_vec())
}

fn files_config(storage: &str, dir: Option<&std::path::Path>, extra: &str) -> String {
    let dir = dir.map(|d| format!("dir = \"{}\"\n", d.display())).unwrap_or_default();
    format!("[files]\nstorage = \"{storage}\"\n{dir}{extra}")
}

/// Uploads, lists, retrieves and downloads a file of several blob chunks; returns its id.
async fn round_trip(app: &TestApp) -> String {
    let bytes = payload(3 * 1024 * 1024 + 17);
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;

    let file = upload(app, "report.bin", &bytes).await;

    let id = file["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "a UUID: {id}");
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], bytes.len());
    assert_eq!(file["filename"], "report.bin");
    assert_eq!(file["purpose"], "ocr");
    assert_eq!(file["source"], "upload");
    assert!(file["sample_type"].is_string());
    let created = file["created_at"].as_i64().expect("Unix seconds");
    assert!((before..=before + 60).contains(&created), "{created}");
    assert!(file.get("deleted").is_none(), "only retrieve says `deleted`: {file}");

    let retrieved = json_of(app.get(&format!("/v1/files/{id}")).await, 200).await;
    let mut expected = file.clone();
    expected["deleted"] = json!(false);
    assert_eq!(retrieved, expected);

    let list = json_of(app.get("/v1/files").await, 200).await;
    assert_eq!(list["object"], "list");
    assert_eq!(list["total"], 1);
    assert_eq!(list["data"], json!([file]));

    let (status, content_type, downloaded) = download(app, &format!("/v1/files/{id}/content")).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/octet-stream");
    assert!(downloaded == bytes, "the download equals the upload ({} bytes read)", downloaded.len());
    id
}

fn sqlite_file(app: &TestApp) -> Option<std::path::PathBuf> {
    app.database_url.strip_prefix("sqlite://").map(std::path::PathBuf::from)
}

#[tokio::test]
async fn a_file_round_trips_through_the_default_storage() {
    let app = TestApp::spawn().await;

    let id = round_trip(&app).await;

    // `auto`: beside a SQLite file, in the database on Postgres.
    if let Some(db) = sqlite_file(&app) {
        let stored = db.with_extension("db.files").join("default").join(&id);
        assert_eq!(std::fs::metadata(&stored).unwrap().len(), 3 * 1024 * 1024 + 17, "{}", stored.display());
    }
}

#[tokio::test]
async fn a_file_round_trips_through_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(Options {
        config_toml: Some(files_config("fs", Some(dir.path()), "")),
        ..Default::default()
    })
    .await;

    let id = round_trip(&app).await;

    let stored = dir.path().join("default").join(&id);
    assert_eq!(std::fs::read(&stored).unwrap(), payload(3 * 1024 * 1024 + 17));
    let names: Vec<_> =
        std::fs::read_dir(dir.path().join("default")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no partial file is left: {names:?}");

    let deleted = json_of(app.delete(&format!("/v1/files/{id}")).await, 200).await;

    assert_eq!(deleted, json!({"id": id, "object": "file", "deleted": true}));
    assert!(!stored.exists(), "the bytes go with the file");
}

#[tokio::test]
async fn a_file_round_trips_through_the_database() {
    let app =
        TestApp::spawn_with(Options { config_toml: Some(files_config("database", None, "")), ..Default::default() })
            .await;

    round_trip(&app).await;

    if let Some(db) = sqlite_file(&app) {
        assert!(!db.with_extension("db.files").exists(), "no directory when the database holds the bytes");
    }
}

#[tokio::test]
async fn an_empty_file_round_trips() {
    let app =
        TestApp::spawn_with(Options { config_toml: Some(files_config("database", None, "")), ..Default::default() })
            .await;

    let file = upload(&app, "empty.txt", b"").await;

    assert_eq!(file["bytes"], 0);
    let (status, _, bytes) = download(&app, &format!("/v1/files/{}/content", file["id"].as_str().unwrap())).await;
    assert_eq!((status, bytes.len()), (200, 0));
}

#[tokio::test]
async fn files_are_listed_newest_first_in_pages_with_the_total() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for name in ["a.txt", "b.txt", "c.txt"] {
        ids.push(upload(&app, name, name.as_bytes()).await["id"].as_str().unwrap().to_owned());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let first = json_of(app.get("/v1/files?page=0&page_size=2").await, 200).await;
    let second = json_of(app.get("/v1/files?page=1&page_size=2").await, 200).await;

    let listed = |page: &Value| -> Vec<String> {
        page["data"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(listed(&first), vec![ids[2].clone(), ids[1].clone()]);
    assert_eq!(listed(&second), vec![ids[0].clone()]);
    assert_eq!((first["total"].clone(), second["total"].clone()), (json!(3), json!(3)));
}

#[tokio::test]
async fn files_are_filtered_by_purpose_name_and_source() {
    let app = TestApp::spawn().await;
    let scan = upload(&app, "Scan-2024.pdf", b"pdf").await;
    let batch =
        json_of(upload_parts(&app, &[("purpose", None, b"batch"), ("file", Some("in.jsonl"), b"{}")]).await, 200).await;

    let batches = json_of(app.get("/v1/files?purpose=batch").await, 200).await;
    let scans = json_of(app.get("/v1/files?search=scan").await, 200).await;
    let uploads = json_of(app.get("/v1/files?source=upload&source=repository").await, 200).await;
    let none = json_of(app.get("/v1/files?source=mistral").await, 200).await;
    let octets = json_of(app.get("/v1/files?mimetypes=application%2Foctet-stream").await, 200).await;

    assert_eq!((batches["data"].clone(), batches["total"].clone()), (json!([batch]), json!(1)));
    assert_eq!((scans["data"].clone(), scans["total"].clone()), (json!([scan]), json!(1)));
    assert_eq!(uploads["total"], 2);
    assert_eq!(none, json!({"object": "list", "data": [], "total": 0}));
    assert_eq!(octets["total"], 2, "the type each part was sent with");
}

#[tokio::test]
async fn another_keys_files_are_invisible_and_untouchable() {
    let app =
        TestApp::spawn_with(Options { api_keys: vec!["key-alpha".into(), "key-beta".into()], ..Default::default() })
            .await;
    let beta = app.with_key(Some("key-beta"));
    let file = upload(&app, "mine.txt", b"alpha's").await;
    let id = file["id"].as_str().unwrap();

    let retrieve = beta.get(&format!("/v1/files/{id}")).await;
    let content = beta.get(&format!("/v1/files/{id}/content")).await;
    let url = beta.get(&format!("/v1/files/{id}/url")).await;
    let delete = beta.delete(&format!("/v1/files/{id}")).await;
    let list = beta.get("/v1/files").await;

    let not_found = json!({
        "object": "error", "message": format!("File `{id}` not found."),
        "type": "invalid_request_error", "param": null, "code": "not_found"
    });
    assert_eq!(json_of(retrieve, 404).await, not_found);
    assert_eq!(json_of(content, 404).await, not_found);
    assert_eq!(json_of(url, 404).await, not_found);
    assert_eq!(json_of(delete, 404).await, not_found);
    assert_eq!(json_of(list, 200).await, json!({"object": "list", "data": [], "total": 0}));
    assert_eq!(download(&app, &format!("/v1/files/{id}/content")).await.2, b"alpha's", "alpha's file is untouched");
    assert_eq!(app.with_key(None).get("/v1/files").await.status(), 401);
}

#[tokio::test]
async fn a_deleted_file_is_a_404_everywhere() {
    let app = TestApp::spawn().await;
    let id = upload(&app, "gone.txt", b"soon gone").await["id"].as_str().unwrap().to_owned();

    assert_eq!(app.delete(&format!("/v1/files/{id}")).await.status(), 200);

    for path in [format!("/v1/files/{id}"), format!("/v1/files/{id}/content"), format!("/v1/files/{id}/url")] {
        assert_eq!(json_of(app.get(&path).await, 404).await["code"], "not_found", "{path}");
    }
    assert_eq!(app.delete(&format!("/v1/files/{id}")).await.status(), 404);
    assert_eq!(json_of(app.get("/v1/files").await, 200).await["total"], 0);
}

/// Moves a file's `expiry` into the past in the database: the shortest one a client may
/// set is an hour.
async fn expire_now(database_url: &str, id: &str) {
    const EXPIRE: &str = "UPDATE files SET expires_at = 1 WHERE id = $1";
    match database_url.strip_prefix("sqlite://") {
        Some(path) => assert_eq!(rusqlite::Connection::open(path).unwrap().execute(EXPIRE, [id]).unwrap(), 1),
        None => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
            assert_eq!(sqlx::query(EXPIRE).bind(id).execute(&mut conn).await.unwrap().rows_affected(), 1);
        }
    }
}

#[tokio::test]
async fn an_expired_upload_is_a_404_everywhere_and_the_purge_removes_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options { config_toml: Some(files_config("fs", Some(dir.path()), "")), ..Default::default() };
    let app = TestApp::spawn_with(options()).await;
    let parts = [("file", Some("brief.txt"), b"short-lived".as_slice()), ("expiry", None, b"1".as_slice())];
    let brief = json_of(upload_parts(&app, &parts).await, 200).await["id"].as_str().unwrap().to_owned();
    let kept = upload(&app, "kept.txt", b"kept").await["id"].as_str().unwrap().to_owned();
    let bytes_of = |id: &str| dir.path().join("default").join(id);

    expire_now(&app.database_url, &brief).await;

    for path in [format!("/v1/files/{brief}"), format!("/v1/files/{brief}/content"), format!("/v1/files/{brief}/url")] {
        assert_eq!(json_of(app.get(&path).await, 404).await["code"], "not_found", "{path}");
    }
    assert_eq!(app.delete(&format!("/v1/files/{brief}")).await.status(), 404);
    let listed = json_of(app.get("/v1/files").await, 200).await;
    assert_eq!((listed["data"][0]["id"].as_str(), &listed["total"]), (Some(kept.as_str()), &json!(1)));
    assert!(bytes_of(&brief).exists(), "the bytes stay until the purge");

    // The purge runs at start-up, then every few minutes.
    app.shut_down().await;
    let again = TestApp::spawn_with(Options { database_url: Some(app.database_url.clone()), ..options() }).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while bytes_of(&brief).exists() {
        assert!(std::time::Instant::now() < deadline, "the expired file's bytes were purged");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    assert_eq!(download(&again, &format!("/v1/files/{kept}/content")).await.2, b"kept");
    assert_eq!(json_of(again.get("/v1/files").await, 200).await["total"], 1);
}

/// A link as the server would sign it, for any expiry time.
fn forged_link(base: &str, workspace: &str, id: &str, expires: i64) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{workspace}\n{id}\n{expires}").as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    format!("{base}/v1/files/{id}/content?workspace={workspace}&expires={expires}&signature={signature}")
}

async fn app_with_known_secret() -> TestApp {
    // Every test that sets it sets the same value.
    std::env::set_var(SECRET_ENV, SECRET);
    TestApp::spawn_with(Options {
        api_keys: vec!["key-alpha".into()],
        config_toml: Some(format!("[files]\nsigning_secret_env = \"{SECRET_ENV}\"\n")),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn a_signed_url_downloads_without_a_key_until_it_expires() {
    let app = app_with_known_secret().await;
    let anonymous = app.with_key(None);
    let id = upload(&app, "shared.png", b"\x89PNG not really").await["id"].as_str().unwrap().to_owned();

    let signed = json_of(app.get(&format!("/v1/files/{id}/url?expiry=2")).await, 200).await;
    let url = signed["url"].as_str().unwrap();

    assert_eq!(signed.as_object().unwrap().len(), 1, "only `url`: {signed}");
    assert!(url.starts_with(&format!("{}/v1/files/{id}/content?", app.base)), "{url}");
    let response = anonymous.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/octet-stream");
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"\x89PNG not really");
    let expires: i64 = url.split("expires=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now + 2 * 3600 - 60..=now + 2 * 3600 + 60).contains(&expires), "two hours from now: {expires}");
}

#[tokio::test]
async fn a_tampered_or_expired_link_is_a_403() {
    let app = app_with_known_secret().await;
    let client = reqwest::Client::new();
    let id = upload(&app, "secret.txt", b"not for everyone").await["id"].as_str().unwrap().to_owned();
    let url = json_of(app.get(&format!("/v1/files/{id}/url")).await, 200).await["url"].as_str().unwrap().to_owned();
    let workspace = url.split("workspace=").nth(1).unwrap().split('&').next().unwrap().to_owned();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;

    let mut tampered_signature = url.clone();
    let last = tampered_signature.pop().unwrap();
    tampered_signature.push(if last == '0' { '1' } else { '0' });
    let later = url.replace("expires=", "expires=9");
    let other_workspace = url.replace(&format!("workspace={workspace}"), "workspace=default");
    let expired = forged_link(&app.base, &workspace, &id, now - 10);
    let genuine = forged_link(&app.base, &workspace, &id, now + 600);

    for (what, link) in
        [("signature", &tampered_signature), ("expiry", &later), ("workspace", &other_workspace), ("expired", &expired)]
    {
        let body = json_of(client.get(link).send().await.unwrap(), 403).await;
        assert_eq!(body["object"], "error", "{what}");
        assert_eq!(body["code"], "forbidden", "{what}");
        assert_eq!(body["type"], "invalid_request_error", "{what}");
    }
    let expired_body = json_of(client.get(&expired).send().await.unwrap(), 403).await;
    assert!(expired_body["message"].as_str().unwrap().contains("expired"), "{expired_body}");
    assert_eq!(client.get(&genuine).send().await.unwrap().status(), 200, "the same key signs the server's links");
}

#[tokio::test]
async fn a_signed_url_expiry_out_of_range_is_a_422() {
    let app = TestApp::spawn().await;
    let id = upload(&app, "x.txt", b"x").await["id"].as_str().unwrap().to_owned();

    for expiry in ["0", "169", "soon"] {
        let response = app.get(&format!("/v1/files/{id}/url?expiry={expiry}")).await;
        let body = crate::helpers::assert_invalid(
            response,
            json!(["query", "expiry"]),
            if expiry == "soon" { "int_parsing" } else { "value_error" },
        )
        .await;
        assert_eq!(body["param"], "expiry");
    }
    assert_eq!(app.get(&format!("/v1/files/{id}/url?expiry=168")).await.status(), 200);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_a_413_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(Options {
        config_toml: Some(files_config("fs", Some(dir.path()), "max_upload_mb = 1\n")),
        ..Default::default()
    })
    .await;

    let over = upload_parts(&app, &[("file", Some("big.bin"), &payload(1024 * 1024 + 1))]).await;
    let at_limit = upload_parts(&app, &[("file", Some("fits.bin"), &payload(1024 * 1024))]).await;

    let body = json_of(over, 413).await;
    assert_eq!(body["code"], "payload_too_large");
    assert_eq!(body["object"], "error");
    assert_eq!(body["message"], "The file is larger than the upload limit of 1 MiB.");
    let fits = json_of(at_limit, 200).await;
    let list = json_of(app.get("/v1/files").await, 200).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["data"][0]["id"], fits["id"]);
    // The partial bytes of the refused upload are gone (removed at once, or by the guard
    // of the abandoned write shortly after).
    let mut names = Vec::new();
    for _ in 0..50 {
        names = std::fs::read_dir(dir.path().join("default")).unwrap().map(|e| e.unwrap().file_name()).collect();
        if names.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(names, vec![std::ffi::OsString::from(fits["id"].as_str().unwrap())]);
}

#[tokio::test]
async fn an_upload_over_the_limit_in_the_database_stores_nothing_either() {
    let app = TestApp::spawn_with(Options {
        config_toml: Some(files_config("database", None, "max_upload_mb = 1\n")),
        max_body_bytes: Some(1024),
        ..Default::default()
    })
    .await;

    // Just over: the server answers before reading the rest, which a client still sending
    // megabytes would see as a reset connection rather than the 413.
    let over = upload_parts(&app, &[("file", Some("big.bin"), &payload(1024 * 1024 + 100))]).await;
    let small = upload_parts(&app, &[("file", Some("small.bin"), &payload(4096))]).await;

    assert_eq!(json_of(over, 413).await["code"], "payload_too_large");
    assert_eq!(json_of(small, 200).await["bytes"], 4096, "the JSON body limit does not apply to uploads");
    assert_eq!(json_of(app.get("/v1/files").await, 200).await["total"], 1);
}

#[tokio::test]
async fn a_form_whose_other_fields_pass_the_limit_is_a_413_too() {
    let app = TestApp::spawn_with(Options {
        config_toml: Some(files_config("database", None, "max_upload_mb = 1\n")),
        ..Default::default()
    })
    .await;
    // The form may hold 1 MiB beside the file; just over that (see the test above on why).
    let padding = vec![b'x'; 2 * 1024 * 1024 + 10_000];

    let response = upload_parts(&app, &[("padding", None, &padding), ("file", Some("small.bin"), b"small")]).await;

    assert_eq!(json_of(response, 413).await["code"], "payload_too_large");
    assert_eq!(json_of(app.get("/v1/files").await, 200).await["total"], 0);
}

#[tokio::test]
async fn an_upload_without_a_file_is_a_422_naming_it() {
    let app = TestApp::spawn().await;

    let response = upload_parts(&app, &[("purpose", None, b"ocr")]).await;

    crate::helpers::assert_invalid(response, json!(["body", "file"]), "missing").await;
    assert_eq!(json_of(app.get("/v1/files").await, 200).await["total"], 0);
}

#[tokio::test]
async fn the_3x_expiry_and_visibility_are_kept() {
    let app = TestApp::spawn().await;

    let file = json_of(
        upload_parts(&app, &[("file", Some("t.txt"), b"t"), ("expiry", None, b"48"), ("visibility", None, b"user")])
            .await,
        200,
    )
    .await;

    assert_eq!(file["visibility"], "user");
    assert_eq!(file["purpose"], "fine-tune", "the upstream default purpose");
    assert_eq!(file["expires_at"].as_i64().unwrap() - file["created_at"].as_i64().unwrap(), 48 * 3600);
    let forever = upload_parts(&app, &[("file", Some("f.txt"), b"f"), ("expiry", None, b"9223372036854775807")]).await;
    assert_eq!(json_of(forever, 200).await["expires_at"], i64::MAX, "a huge expiry saturates");
    let wrong = upload_parts(&app, &[("file", Some("w.txt"), b"w"), ("visibility", None, b"everyone")]).await;
    crate::helpers::assert_invalid(wrong, json!(["body", "visibility"]), "enum").await;
    assert_eq!(json_of(app.get("/v1/files").await, 200).await["total"], 2, "the refused upload stored nothing");
}

/// Against an S3-compatible service: `PALAVER_TEST_S3_URL` (scripts/test starts moto and
/// sets it). Without it the test passes without running, except in CI, where it fails.
#[tokio::test]
async fn a_file_round_trips_through_s3() {
    let Some(endpoint) = std::env::var("PALAVER_TEST_S3_URL").ok().filter(|u| !u.is_empty()) else {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI must run the S3 test: PALAVER_TEST_S3_URL is unset");
        eprintln!("PALAVER_TEST_S3_URL is unset: the S3 test did not run");
        return;
    };
    std::env::set_var("PALAVER_TEST_S3_KEY_ID", "testing");
    std::env::set_var("PALAVER_TEST_S3_SECRET", "testing");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let bucket = format!("palaver-test-{}-{nanos}", std::process::id());
    let created = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await.unwrap();
    assert!(created.status().is_success(), "creating bucket {bucket}: {}", created.status());
    let config = format!(
        "[files]\nstorage = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n\
         path_style = true\nprefix = \"palaver/\"\naccess_key_id_env = \"PALAVER_TEST_S3_KEY_ID\"\n\
         secret_access_key_env = \"PALAVER_TEST_S3_SECRET\"\n"
    );
    let app = TestApp::spawn_with(Options { config_toml: Some(config.clone()), ..Default::default() }).await;

    let id = round_trip(&app).await;
    // Larger than object_store's buffer: a multipart upload.
    let large = payload(12 * 1024 * 1024 + 3);
    let big = upload(&app, "large.bin", &large).await;

    // Read behind palaver's back, as another S3 client would (moto refuses unsigned reads).
    use object_store::ObjectStore;
    let bucket_client = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    let object_path = object_store::path::Path::from(format!("palaver/default/{id}"));
    let object = bucket_client.get(&object_path).await.expect("the bytes are in the bucket");
    assert_eq!(object.bytes().await.unwrap().len(), 3 * 1024 * 1024 + 17);
    let (status, _, downloaded) = download(&app, &format!("/v1/files/{}/content", big["id"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    assert!(downloaded == large, "the multipart upload reads back whole");

    assert_eq!(app.delete(&format!("/v1/files/{id}")).await.status(), 200);
    let gone = bucket_client.get(&object_path).await;
    assert!(matches!(gone, Err(object_store::Error::NotFound { .. })), "the object goes with the file: {gone:?}");

    // The sweep of bytes no file names lists the blobs under the prefix, and nothing else.
    for other in ["palaver/default/7d3b0b3e-stray", "palaver/deeper/a/b", "elsewhere/default/x"] {
        bucket_client.put(&object_store::path::Path::from(other), b"x".to_vec().into()).await.unwrap();
    }
    let files: palaver::config::FilesConfig = toml::from_str(config.split_once("\n").unwrap().1).unwrap();
    let s3 = palaver::store::blobs::s3::S3Blobs::from_config(&files).unwrap();
    let listed = |before: palaver::domain::time::Timestamp| {
        use futures::TryStreamExt;
        use palaver::store::blobs::BlobStore;
        let s3 = &s3;
        async move {
            let keys: Vec<_> = s3.blobs_before(before).try_collect().await.unwrap();
            let mut names: Vec<String> = keys.iter().map(|k| k.path().unwrap()).collect();
            names.sort();
            names
        }
    };
    let now = palaver::domain::time::Timestamp::now();
    let mut expected = vec![format!("default/{}", big["id"].as_str().unwrap()), "default/7d3b0b3e-stray".to_owned()];
    expected.sort();
    assert_eq!(listed(now.plus(std::time::Duration::from_secs(60))).await, expected);
    assert_eq!(listed(now.minus(std::time::Duration::from_secs(3600))).await, Vec::<String>::new());
}
