//! `image_generation` through a fake OpenAI-compatible images API: the image is stored
//! through the Files API and shown as a `tool_file` chunk; faults are the tool's answer.

use crate::helpers::{names, Options, TestApp};
use crate::upstream::{FakeUpstream, Reply};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0D, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8, 0xCF, 0xC0, 0xF0, 0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D,
    0x1D, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

#[derive(Clone)]
enum Answer {
    Base64,
    Url,
    Status(u16),
    Slow(Duration),
    NotAnImage,
}

#[derive(Clone, Default)]
struct Shared {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    requests: Arc<Mutex<Vec<(Value, String)>>>,
    base: Arc<Mutex<String>>,
}

struct FakeImages {
    url: String,
    shared: Shared,
}

impl FakeImages {
    async fn start() -> FakeImages {
        let shared = Shared::default();
        let router = Router::new()
            .route("/v1/images/generations", post(generate))
            .route("/files/img.png", get(|| async { ([(header::CONTENT_TYPE, "image/png")], PNG) }))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        *shared.base.lock().unwrap() = format!("http://{addr}");
        FakeImages { url: format!("http://{addr}/v1"), shared }
    }

    fn answer(&self, answer: Answer) {
        self.shared.answers.lock().unwrap().push_back(answer);
    }
}

async fn generate(State(shared): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let key = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    shared.requests.lock().unwrap().push((body, key));
    let answer = shared.answers.lock().unwrap().pop_front().unwrap_or(Answer::Base64);
    use base64::Engine as _;
    match answer {
        Answer::Base64 => {
            Json(json!({"created": 1, "data": [{"b64_json": base64::engine::general_purpose::STANDARD.encode(PNG)}]}))
                .into_response()
        }
        Answer::Url => {
            let url = format!("{}/files/img.png", shared.base.lock().unwrap());
            Json(json!({"created": 1, "data": [{"url": url}]})).into_response()
        }
        Answer::Status(status) => {
            (StatusCode::from_u16(status).unwrap(), Json(json!({"error": {"message": "content policy"}})))
                .into_response()
        }
        Answer::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Json(json!({"data": []})).into_response()
        }
        Answer::NotAnImage => {
            let html = base64::engine::general_purpose::STANDARD.encode("<html>sorry</html>");
            Json(json!({"data": [{"b64_json": html}]})).into_response()
        }
    }
}

async fn setup() -> (TestApp, FakeUpstream, FakeImages, String) {
    std::env::set_var("PALAVER_TEST_IMAGES_KEY", "img-key");
    let images = FakeImages::start().await;
    let toml = format!(
        "[image_generation]\nurl = \"{}\"\napi_key_env = \"PALAVER_TEST_IMAGES_KEY\"\nmodel = \"flux\"\ntimeout_secs = 1\n",
        images.url
    );
    let (app, upstream) =
        TestApp::with_upstream_options(Options { config_toml: Some(toml), ..Options::default() }).await;
    let agent = app
        .create_agent(json!({"model": "fake-model", "name": "Painter", "tools": [{"type": "image_generation"}]}))
        .await;
    (app, upstream, images, agent["id"].as_str().unwrap().to_owned())
}

fn draw(id: &'static str) -> Reply {
    Reply::ToolCalls("", vec![(id, "image_generation", r#"{"prompt": "a red square"}"#)])
}

async fn download(app: &TestApp, file_id: &str) -> (String, Vec<u8>) {
    let response = app.get(&format!("/v1/files/{file_id}/content")).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
    (content_type, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_generated_image_is_stored_and_shown_as_a_tool_file_after_the_answer() {
    let (app, upstream, images, agent_id) = setup().await;
    images.answer(Answer::Base64);
    images.answer(Answer::Url);
    upstream.script([
        Reply::ToolCalls(
            "",
            vec![
                ("call_1", "image_generation", r#"{"prompt": "a red square"}"#),
                ("call_2", "image_generation", r#"{"prompt": "a blue one"}"#),
            ],
        ),
        Reply::Text("Here they are."),
    ]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Draw two squares"})).await;

    let outputs = response["outputs"].as_array().unwrap();
    assert_eq!(
        outputs.iter().map(|e| e["type"].as_str().unwrap()).collect::<Vec<_>>(),
        ["tool.execution", "tool.execution", "message.output"]
    );
    assert_eq!(outputs[0]["name"], "image_generation");
    let content = outputs[2]["content"].as_array().unwrap();
    assert_eq!(content[0], json!({"type": "text", "text": "Here they are."}));
    for (n, chunk) in content[1..].iter().enumerate() {
        assert_eq!(chunk["type"], "tool_file");
        assert_eq!(chunk["tool"], "image_generation");
        assert_eq!(chunk["file_name"], format!("image_generated_{n}"));
        assert_eq!(chunk["file_type"], "png");
        let (content_type, bytes) = download(&app, chunk["file_id"].as_str().unwrap()).await;
        assert_eq!(content_type, "application/octet-stream");
        assert_eq!(bytes, PNG);
        let file = app.get(&format!("/v1/files/{}", chunk["file_id"].as_str().unwrap())).await;
        let file: Value = file.json().await.unwrap();
        assert_eq!(file["filename"], format!("image_generated_{n}.png"));
    }
    assert_eq!(content.len(), 3);
    assert_eq!(response["usage"]["connectors"], json!({"image_generation": 2}));

    let (request, key) = images.shared.requests.lock().unwrap()[0].clone();
    assert_eq!(request, json!({"model": "flux", "prompt": "a red square", "size": "1024x1024", "n": 1}));
    assert_eq!(key, "Bearer img-key");
    let told = upstream.last_request()["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    assert!(told.as_str().unwrap().contains("shown to the user"), "{told}");
    let history = app.history(response["conversation_id"].as_str().unwrap()).await;
    assert_eq!(history[1..], outputs[..]);
}

#[tokio::test]
async fn a_streamed_image_arrives_as_one_tool_file_delta_at_the_end_of_the_message() {
    let (app, upstream, _images, agent_id) = setup().await;
    upstream.script([draw("call_1"), Reply::Text("Done.")]);

    let events =
        app.stream("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Draw", "stream": true})).await;

    assert_eq!(
        names(&events),
        [
            "conversation.response.started",
            "tool.execution.started",
            "tool.execution.done",
            "message.output.delta",
            "message.output.delta",
            "conversation.response.done"
        ]
    );
    assert_eq!(events[3].1["content"], "Done.");
    assert_eq!(events[4].1["content"]["type"], "tool_file");
    assert_eq!(events[4].1["content_index"], 1);
}

#[tokio::test]
async fn an_image_with_no_answer_after_it_still_shows() {
    let (app, upstream, _images, agent_id) = setup().await;
    upstream.script([draw("call_1"), Reply::Text("")]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Draw"})).await;

    let last = response["outputs"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "message.output");
    assert_eq!(last["content"][0]["type"], "tool_file");
}

#[tokio::test]
async fn faults_of_the_images_api_are_the_tools_answer_and_the_turn_goes_on() {
    let (app, upstream, images, agent_id) = setup().await;
    let faults = [
        (Answer::Status(400), "400"),
        (Answer::Slow(Duration::from_secs(3)), "did not answer in time"),
        (Answer::NotAnImage, "not a PNG"),
    ];
    for (fault, expected) in faults {
        images.answer(fault);
        upstream.script([draw("call_1"), Reply::Text("Sorry.")]);

        let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Draw"})).await;

        let outputs = response["outputs"].as_array().unwrap();
        assert_eq!(outputs[0]["info"]["is_error"], true, "{expected}");
        let output = outputs[0]["info"]["output"].as_str().unwrap();
        assert!(output.contains(expected), "{output}");
        assert_eq!(outputs[1]["content"], "Sorry.", "no file is shown after a failure");
    }
}
