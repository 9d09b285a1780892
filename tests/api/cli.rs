//! The `palaver` binary as a new user meets it: flags after the command, `--help`, what the
//! first start says, a clean stop, and operator mistakes reported in one line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_palaver");

/// The binary with a clean environment: no setting reaches it but the flags a test passes.
pub fn palaver() -> Command {
    let mut command = Command::new(BIN);
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("RUST_LOG", "info");
    command
}

/// A started server and the lines it has logged so far (stdout and stderr alike).
pub struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    pub fn start(mut command: Command) -> Server {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (sender, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            });
        }
        Server { child, lines, seen: Vec::new() }
    }

    /// Waits for a logged line containing `needle` and returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with `{needle}`; the server said:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The address from the `palaver listening addr=…` line.
    pub fn addr(&mut self) -> String {
        let line = self.wait_for("palaver listening");
        line.rsplit("addr=").next().unwrap().trim().to_owned()
    }

    /// Sends SIGTERM (as `docker stop` does) and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().unwrap();
        panic!("the server did not stop within 15 s of SIGTERM");
    }
}

/// A fresh SQLite file in `dir`.
fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("p.db").display())
}

/// Starts `palaver serve` with `flag file` on a fresh database, expecting it to refuse;
/// returns what it wrote on stderr.
fn refused_start(flag: &str, file: &Path) -> String {
    let url = sqlite_url(file.parent().unwrap());
    let output =
        palaver().args(["serve", "--addr", "127.0.0.1:0", "--database-url", &url, flag]).arg(file).output().unwrap();
    assert!(!output.status.success(), "palaver started anyway");
    String::from_utf8(output.stderr).unwrap()
}

fn health(addr: &str) -> u16 {
    let mut command = palaver();
    let status = command.args(["health", "--addr", addr]).status().unwrap();
    if status.success() {
        200
    } else {
        503
    }
}

#[test]
fn serve_help_lists_every_setting_after_the_command() {
    let output = palaver().args(["serve", "--help"]).output().unwrap();

    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--addr",
        "--database-url",
        "--upstream-url",
        "--upstream-api-key",
        "--api-keys",
        "--config",
        "--max-body-bytes",
        "--upstream-connect-timeout-ms",
        "--upstream-read-timeout-ms",
        "--max-rounds",
        "--max-handoffs",
        "--history-cache-entries",
        "--db-max-connections",
        "--db-acquire-timeout-ms",
        "--idempotency-ttl-secs",
        "--stream-retention-secs",
        "--max-connections",
        "--client-header-timeout-ms",
        "--client-body-timeout-ms",
        "--log-format",
        "--sqlite-synchronous",
        "--metrics-addr",
        "--mock-script",
    ] {
        assert!(help.contains(flag), "`palaver serve --help` lists {flag}:\n{help}");
    }
    assert!(help.contains("PALAVER_ADDR"), "the help names each setting's environment variable");
}

#[test]
fn a_first_start_says_where_data_lives_who_answers_and_whether_auth_is_on_and_a_clean_stop_leaves_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("first.db");
    let mut command = palaver();
    command.current_dir(dir.path()).args(["serve", "--addr", "127.0.0.1:0", "--database-url", "sqlite://first.db"]);
    let mut server = Server::start(command);

    let addr = server.addr();
    let data = server.wait_for("data:");
    let models = server.wait_for("models:");
    let files = server.wait_for("files:");
    let tools = server.wait_for("tools:");
    let auth = server.wait_for("auth:");
    assert!(data.contains(&format!("SQLite file {}", database.display())), "the absolute path: {data}");
    assert!(files.contains(&format!("in the directory {}.files", database.display())), "beside the file: {files}");
    assert!(models.contains("no upstream configured: the built-in `echo` model answers every model name"), "{models}");
    assert!(tools.contains("web_search") && tools.contains("not offered"), "{tools}");
    assert!(auth.contains("auth: off"), "{auth}");
    assert_eq!(health(&addr), 200, "flags after `serve` took effect: it listens on {addr}");
    assert!(!server.seen.iter().any(|l| l.contains('\u{1b}')), "no colour codes when logging to a pipe");

    let status = server.terminate();

    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    assert!(database.exists());
    for leftover in ["first.db-wal", "first.db-shm"] {
        assert!(!dir.path().join(leftover).exists(), "{leftover} was folded back at shutdown");
    }
}

#[test]
fn flags_before_the_command_work_too_and_keys_turn_auth_on() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut command = palaver();
    command.args(["--api-keys", "k1,k2", "--database-url", &url, "serve", "--addr", "127.0.0.1:0"]);
    let mut server = Server::start(command);

    let auth = server.wait_for("auth:");

    assert!(auth.contains("auth: on, 2 API key(s)"), "{auth}");
    server.terminate();
}

#[test]
fn an_operator_mistake_stops_the_server_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("palaver.toml");
    std::fs::write(&config, "[[upstream]]\nname = \"x\"\n").unwrap();

    let stderr = refused_start("--config", &config);

    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: parsing ") && lines[0].contains("missing field `url`"), "{stderr}");
    assert!(!stderr.contains("backtrace") && !stderr.contains("Caused by"), "{stderr}");
}

/// On Postgres (`TEST_DATABASE_URL`), a `DATABASE_URL` naming a database that does not exist
/// yet: palaver creates it, as the SQLite default creates its file.
#[test]
fn a_missing_postgres_database_is_created_at_first_start() {
    let Ok(admin) = std::env::var("TEST_DATABASE_URL") else {
        return; // The SQLite run of the suite; the script runs it again on Postgres.
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    // `palaver_t_` names are dropped by the test script after the run.
    let name = format!("palaver_t_cli_{}_{nanos:x}", std::process::id());
    let (base, _) = admin.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let mut command = palaver();
    command.args(["serve", "--addr", "127.0.0.1:0", "--database-url", &url]);
    let mut server = Server::start(command);

    let created = server.wait_for("created the Postgres database");
    let data = server.wait_for("data:");
    let addr = server.addr();

    assert!(created.contains(&name), "{created}");
    assert!(data.contains(&format!("Postgres database `{name}`")), "{data}");
    assert_eq!(health(&addr), 200);
    assert!(server.terminate().success());
}

#[test]
fn the_database_url_is_described_without_its_password() {
    let described = palaver::store::describe("postgres://u:secret@db.internal:5433/prod");

    assert_eq!(described, "Postgres database `prod` on db.internal:5433 (user `u`)");
    assert!(palaver::store::describe("sqlite::memory:").contains("in memory"));
    let relative = palaver::store::describe("sqlite://data/p.db");
    assert!(Path::new(relative.trim_start_matches("SQLite file ")).is_absolute(), "{relative}");
}

/// No Docker engine runs where the tests do, so the Dockerfile's dependency layer is checked
/// by reading: its stub crate must give every target Cargo.toml names a file, or `cargo
/// build` in the image fails to parse the manifest.
#[test]
fn the_dockerfile_stubs_every_target_the_manifest_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml")).unwrap().parse().unwrap();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let stub_line = dockerfile.lines().find(|l| l.contains("touch src/lib.rs")).expect("the stub line");

    let paths: Vec<String> = [("test", "tests"), ("bench", "benches")]
        .iter()
        .flat_map(|(kind, dir)| {
            let targets = manifest.get(*kind).and_then(|t| t.as_array()).cloned().unwrap_or_default();
            targets.into_iter().map(move |target| match target.get("path").and_then(|p| p.as_str()) {
                Some(path) => path.to_owned(),
                None => format!("{dir}/{}.rs", target["name"].as_str().unwrap()),
            })
        })
        .collect();

    assert!(paths.len() >= 3, "the manifest's test and bench targets: {paths:?}");
    for path in &paths {
        assert!(stub_line.contains(path.as_str()), "the Dockerfile does not stub `{path}`: {stub_line}");
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_the_requests_log_lines_carry_it_too() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let mut command = palaver();
    command.args(["serve", "--addr", "127.0.0.1:0", "--database-url", &url]);
    let mut server = Server::start(command);
    let base = format!("http://{}", server.addr());
    let client = reqwest::Client::new();
    let body = serde_json::json!({"model": "echo", "inputs": "hi"});

    let theirs = client.post(format!("{base}/v1/conversations")).header("x-request-id", "req-test-42").json(&body);
    let theirs = theirs.send().await.unwrap();
    let ours = client.get(format!("{base}/v1/no-such-route")).send().await.unwrap();

    assert_eq!(theirs.status(), 200);
    assert_eq!(theirs.headers()["x-request-id"], "req-test-42", "the client's id is kept");
    assert_eq!(ours.status(), 404);
    let generated = ours.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a new id (a UUID) for a request that sent none: {generated}");
    let committed = server.wait_for("turn committed");
    assert!(committed.contains("request_id=req-test-42"), "the run's log line names its request: {committed}");
    server.terminate();
}

#[test]
fn a_malformed_mock_script_stops_the_start_naming_the_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    std::fs::write(&script, r#"{"rules": [{"replies": [{"text": "ok"}]}, {"replies": [{"error": {"status": 200}}]}]}"#)
        .unwrap();

    let stderr = refused_start("--mock-script", &script);

    assert!(stderr.contains("`rules.1.replies.0.error.status`: An error status is from 400 to 599"), "{stderr}");
}

/// The README's testing guide shows the two guide test files verbatim; the SDK suites run
/// the files, so what the guide says is what CI proves.
#[test]
fn the_readme_testing_guide_is_the_code_the_sdk_suites_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();

    for file in ["tests/sdk/python/test_mock_guide.py", "tests/sdk/ts/mock_guide.test.mjs"] {
        let code = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(readme.contains(&code), "the README no longer shows {file} as it is");
    }
}
