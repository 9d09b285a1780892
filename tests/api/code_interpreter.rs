//! `code_interpreter` run by palaver's own sandbox: the model's code runs in its
//! conversation's work directory, its output is the tool's answer, and the files it writes
//! come back as downloadable `tool_file` chunks.

use crate::helpers::{json_of, names, Options, TestApp};
use crate::upstream::{FakeUpstream, Reply};
use serde_json::{json, Value};

/// The interpreter the sandbox runs (scripts/test prepares one with numpy and matplotlib).
fn python() -> String {
    match std::env::var("PALAVER_TEST_SANDBOX_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PALAVER_TEST_SANDBOX_PYTHON is not set: scripts/test prepares it")
        }
        _ => "/usr/bin/python3".to_owned(),
    }
}

async fn setup() -> (TestApp, FakeUpstream, String) {
    let workdirs = tempfile::tempdir().unwrap().keep();
    let toml = format!(
        "[code_interpreter]\nsandbox = \"auto\"\nhelper = \"{}\"\npython = \"{}\"\ntimeout_secs = 3\nworkdir_root = \"{}\"\n",
        env!("CARGO_BIN_EXE_palaver"),
        python(),
        workdirs.display()
    );
    let (app, upstream) =
        TestApp::with_upstream_options(Options { config_toml: Some(toml), ..Options::default() }).await;
    let agent = app
        .create_agent(json!({"model": "fake-model", "name": "Analyst", "tools": [{"type": "code_interpreter"}]}))
        .await;
    (app, upstream, agent["id"].as_str().unwrap().to_owned())
}

fn run(id: &'static str, code: &str) -> Reply {
    let arguments: &'static str = Box::leak(json!({"code": code}).to_string().into_boxed_str());
    Reply::ToolCalls("", vec![(id, "code_interpreter", arguments)])
}

#[tokio::test]
async fn code_runs_in_the_sandbox_and_its_output_is_the_tools_answer() {
    let (app, upstream, agent_id) = setup().await;
    upstream.script([run("call_1", "x = 6*7\nprint(x)\nx + 1"), Reply::Text("It is 42.")]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "6 times 7?"})).await;

    let execution = &response["outputs"][0];
    assert_eq!(execution["type"], "tool.execution");
    assert_eq!(execution["name"], "code_interpreter");
    assert_eq!(execution["info"]["code"], "x = 6*7\nprint(x)\nx + 1");
    assert_eq!(execution["info"]["code_output"], "42\n43\n", "the printed value, then the final expression");
    assert!(execution["info"].get("is_error").is_none());
    assert_eq!(response["outputs"][1]["content"], "It is 42.");
    assert_eq!(response["usage"]["connectors"], json!({"code_interpreter": 1}));
    let told = upstream.last_request()["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    assert_eq!(told, "42\n43\n");
}

#[tokio::test]
async fn written_files_and_plots_come_back_as_downloadable_tool_files() {
    let (app, upstream, agent_id) = setup().await;
    let code =
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nopen('data.csv', 'w').write('a,b\\n1,2\\n')";
    upstream.script([run("call_1", code), Reply::Text("Here is the plot.")]);

    let response = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "Plot it"})).await;

    let content = response["outputs"][1]["content"].as_array().unwrap().clone();
    assert_eq!(content[0], json!({"type": "text", "text": "Here is the plot."}));
    let mut files: Vec<Value> = content[1..].to_vec();
    files.sort_by_key(|f| f["file_name"].as_str().unwrap().to_owned());
    assert_eq!(
        files.iter().map(|f| f["file_name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["data.csv", "figure_0.png"]
    );
    for file in &files {
        assert_eq!(file["type"], "tool_file");
        assert_eq!(file["tool"], "code_interpreter");
    }
    assert_eq!(files[0]["file_type"], "csv");
    assert_eq!(files[1]["file_type"], "png");
    let csv = app.get(&format!("/v1/files/{}/content", files[0]["file_id"].as_str().unwrap())).await;
    assert_eq!(csv.headers()["content-type"], "application/octet-stream");
    assert_eq!(csv.text().await.unwrap(), "a,b\n1,2\n");
    let png = app.get(&format!("/v1/files/{}/content", files[1]["file_id"].as_str().unwrap())).await;
    assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
    let history = app.history(response["conversation_id"].as_str().unwrap()).await;
    assert_eq!(history[2], response["outputs"][1]);
}

#[tokio::test]
async fn files_stay_for_the_next_call_of_a_conversation_but_not_for_another_conversation() {
    let (app, upstream, agent_id) = setup().await;
    upstream.script([run("call_1", "open('state.txt', 'w').write('kept')"), Reply::Text("Saved.")]);
    let first = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "save"})).await;
    let path = format!("/v1/conversations/{}", first["conversation_id"].as_str().unwrap());

    upstream.script([run("call_2", "print(open('state.txt').read())"), Reply::Text("Read.")]);
    let second = app.ok(&path, &json!({"inputs": "read"})).await;
    assert_eq!(second["outputs"][0]["info"]["code_output"], "kept\n");

    upstream.script([run("call_3", "print(open('state.txt').read())"), Reply::Text("Nothing.")]);
    let other = app.ok("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "read"})).await;
    let output = other["outputs"][0]["info"]["code_output"].as_str().unwrap();
    assert!(output.contains("FileNotFoundError"), "{output}");
    assert_eq!(other["outputs"][0]["info"]["is_error"], true);
}

#[tokio::test]
async fn a_limit_hit_is_the_tools_answer_and_the_turn_goes_on() {
    let (app, upstream, agent_id) = setup().await;
    upstream.script([run("call_1", "while True:\n    pass"), Reply::Text("That took too long.")]);

    let events =
        app.stream("/v1/conversations", &json!({"agent_id": agent_id, "inputs": "loop", "stream": true})).await;

    assert_eq!(names(&events)[1..3], ["tool.execution.started", "tool.execution.done"]);
    let info = &events[2].1["info"];
    assert_eq!(info["is_error"], true);
    assert!(info["code_output"].as_str().unwrap().to_lowercase().contains("time"), "{info}");
    assert_eq!(events.last().unwrap().0, "conversation.response.done");
    assert_eq!(json_of(app.get("/health").await, 200).await["status"], "ok");
}
