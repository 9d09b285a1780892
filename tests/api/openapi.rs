//! `GET /openapi.json`: served without a key, OpenAPI 3.1, the official operation ids and
//! schema names, error answers on every operation, and nothing documented that is not served.

use crate::helpers::{json_of, Options, TestApp};
use reqwest::Method;
use serde_json::Value;
use std::collections::HashSet;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document() -> (TestApp, Value) {
    let app = TestApp::spawn_with(Options { api_keys: vec!["k".into()], ..Default::default() }).await;
    let response = app.with_key(None).get("/openapi.json").await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc = json_of(response, 200).await;
    (app, doc)
}

/// Every (method, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                all.push((method.to_owned(), path.clone(), operation.clone()));
            }
        }
    }
    all
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_the_official_names() {
    let (_app, doc) = document().await;

    assert_eq!(doc["openapi"], "3.1.0");
    let ids: Vec<String> =
        operations(&doc).iter().map(|(_, _, op)| op["operationId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "operation ids are unique: {ids:?}");
    for official in [
        "agents_api_v1_agents_create",
        "agents_api_v1_agents_update",
        "agents_api_v1_agents_get_version",
        "agents_api_v1_conversations_start",
        "agents_api_v1_conversations_append",
        "agents_api_v1_conversations_restart",
        "agents_api_v1_conversations_history",
        "agents_completion_v1_agents_completions_post",
        "files_api_routes_upload_file",
        "list_models_v1_models_get",
    ] {
        assert!(ids.iter().any(|id| id == official), "{official} is missing");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ConversationRequest",
        "ConversationAppendRequest",
        "ConversationRestartRequest",
        "ConversationResponse",
        "CreateAgentRequest",
        "UpdateAgentRequest",
        "Agent",
        "CompletionArgs",
        "HTTPValidationError",
        "ValidationError",
        "ErrorResponse",
        "TextChunk",
        "ImageURLChunk",
        "DocumentURLChunk",
        "ToolFileChunk",
        "ToolReferenceChunk",
        "ThinkingChunk",
        "ContentChunk",
        "SystemMessage",
        "UserMessage",
        "AssistantMessage",
        "ToolMessage",
        "Tool",
        "Function",
        "ChatCompletionRequest",
    ] {
        assert!(schemas.contains_key(name), "schema {name} is missing");
    }
}

#[tokio::test]
async fn every_operation_documents_its_errors_and_streams_are_event_streams() {
    let (_app, doc) = document().await;

    for (method, path, operation) in operations(&doc) {
        let responses = &operation["responses"];
        assert_eq!(
            responses["422"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/HTTPValidationError",
            "{method} {path}"
        );
        for range in ["4XX", "5XX"] {
            assert_eq!(
                responses[range]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorResponse",
                "{method} {path}"
            );
        }
    }
    for path in
        ["/v1/conversations", "/v1/conversations/{conversation_id}", "/v1/conversations/{conversation_id}/restart"]
    {
        let content = &doc["paths"][path]["post"]["responses"]["200"]["content"];
        assert!(content.get("application/json").is_some(), "{path}");
        assert!(content.get("text/event-stream").is_some(), "{path}");
    }
}

/// The other direction (served but not documented) cannot happen: routes are registered
/// only through their documentation (`utoipa_axum`).
#[tokio::test]
async fn every_documented_operation_is_served() {
    let (app, doc) = document().await;

    for (method, path, _) in operations(&doc) {
        let concrete = path.replace(['{', '}'], "");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = app.request(method.clone(), &concrete).send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();

        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(!body.contains("No route for"), "{method} {path}: {body}");
    }
}

#[tokio::test]
async fn contents_messages_and_tools_are_documented_item_by_item() {
    let (_app, doc) = document().await;
    let schemas = &doc["components"]["schemas"];
    let refs = |schema: &Value| -> Vec<String> {
        schema["oneOf"].as_array().unwrap().iter().map(|m| m["$ref"].as_str().unwrap().to_owned()).collect()
    };
    let named =
        |names: &[&str]| -> Vec<String> { names.iter().map(|name| format!("#/components/schemas/{name}")).collect() };

    for (entry, chunks) in
        [("MessageInputEntry", "MessageInputContentChunks"), ("MessageOutputEntry", "MessageOutputContentChunks")]
    {
        let content = &schemas[entry]["properties"]["content"];
        assert_eq!(content["oneOf"][1]["items"]["$ref"], format!("#/components/schemas/{chunks}"), "{entry}");
    }
    assert!(refs(&schemas["MessageOutputContentChunks"]).contains(&named(&["ToolReferenceChunk"])[0]));
    for request in ["AgentsCompletionRequest", "ChatCompletionRequest"] {
        let properties = &schemas[request]["properties"];
        assert_eq!(
            refs(&properties["messages"]["items"]),
            named(&["SystemMessage", "UserMessage", "AssistantMessage", "ToolMessage"]),
            "{request}"
        );
        assert_eq!(properties["tools"]["items"]["$ref"], "#/components/schemas/Tool", "{request}");
    }
    assert_eq!(schemas["Tool"]["properties"]["function"]["oneOf"][1]["$ref"], "#/components/schemas/Function");
    assert_eq!(
        schemas["ChatCompletionChoice"]["properties"]["message"]["$ref"], "#/components/schemas/AssistantMessage",
        "one schema for an answer, sent or received"
    );
}
