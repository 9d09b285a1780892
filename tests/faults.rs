//! Fault tests: the built `palaver` binary as child processes, SIGKILLed under concurrent
//! writers (on SQLite, and as two replicas on Postgres), its Postgres crashed and restarted
//! under load, its upstream stalled, reset and trickled through a fault proxy. What they
//! assert: every acknowledged turn is in its conversation's history, no turn is torn, a
//! fault is answered with its documented status (503, 502, 504), never a 500.
//!
//! Postgres runs as a private throwaway cluster each test starts itself (`initdb` into a
//! temporary directory, a free port), so crashing it disturbs nobody. `cargo test --test
//! faults`; `FAULTS_SEED=n` replays a soak's random schedule.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_palaver");

/// A small deterministic generator: the soak's schedule is replayable from its printed seed.
struct Rng(u64);

impl Rng {
    fn from_env(test: &str) -> Rng {
        let seed = std::env::var("FAULTS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
        });
        eprintln!("{test}: FAULTS_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("an HTTP client")
}

/// One `palaver serve` child on a fixed port, restartable on the same database.
struct Palaver {
    child: Option<Child>,
    port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl Palaver {
    fn start(env: &[(&str, &str)], log: PathBuf) -> Palaver {
        let mut palaver = Palaver {
            child: None,
            port: free_port(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log,
        };
        palaver.spawn();
        palaver
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("the log file");
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("PALAVER_ADDR", format!("127.0.0.1:{}", self.port))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log);
        self.child = Some(command.spawn().expect("palaver starts"));
    }

    /// Waits until `/health` answers 200: the server is up and its database serves.
    async fn ready(&mut self) {
        let client = http();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(format!("{}/health", self.base())).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("palaver exited ({status}) before serving:\n{}", self.log_tail());
            }
            assert!(Instant::now() < deadline, "palaver did not serve within 30 s:\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL: no shutdown hook, no flush, as an OOM kill or a power cut of the process.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("the killed child is reaped");
        }
    }

    async fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.ready().await;
    }
}

impl Drop for Palaver {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The Postgres server binaries: `PG_BIN`, else `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`.
fn postgres_bin() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return has_tools(&dir).then_some(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has_tools(d))
        .collect();
    dirs.sort_by_key(|d| d.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()));
    dirs.pop()
}

/// A private Postgres cluster in a temporary directory, stopped and removed on drop (also
/// when the test fails).
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    /// `None` when the Postgres tools are missing outside CI; in CI (`CI=true`, or
    /// `PALAVER_FAULTS_REQUIRE_POSTGRES=1` as `scripts/test` sets) that is a failure.
    fn start() -> Option<Cluster> {
        let Some(bin) = postgres_bin() else {
            let required = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
                || std::env::var("PALAVER_FAULTS_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
            assert!(!required, "initdb and pg_ctl are required (install Postgres, or set PG_BIN)");
            eprintln!("no initdb/pg_ctl found (set PG_BIN): this Postgres fault test did not run");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("palaver-faults-pg").tempdir().expect("a temporary directory");
        // initdb refuses to run as root; the cluster then belongs to the `postgres` user,
        // who must be able to write here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let cluster = Cluster { bin, dir, port: free_port() };
        let data = cluster.data();
        cluster.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        cluster.start_server();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if nix::unistd::Uid::effective().is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
        );
    }

    fn start_server(&self) {
        let options = format!("-c listen_addresses=127.0.0.1 -p {} -k {}", self.port, self.dir.path().display());
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &options, "-w", "-t", "60", "start"]);
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, without a
    /// checkpoint; the next start is a crash recovery.
    fn crash(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/palaver", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["-D", &self.data(), "-m", "immediate", "-w", "stop"]).output();
    }
}

/// What one request came to: a complete answer, an HTTP or stream error code, or no answer
/// at all (the connection failed).
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Answered { conversation_id: String, output: String },
    Failed(u16),
    NoAnswer,
}

/// Sends a turn (JSON or streamed) and reads it to the end.
async fn turn(client: &reqwest::Client, url: &str, body: &Value) -> Outcome {
    turn_with_key(client, url, body, None).await
}

async fn turn_with_key(client: &reqwest::Client, url: &str, body: &Value, key: Option<&str>) -> Outcome {
    let mut request = client.post(url).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let Ok(response) = request.send().await else {
        return Outcome::NoAnswer;
    };
    let status = response.status().as_u16();
    let streamed = response.headers().get("content-type").is_some_and(|v| v == "text/event-stream");
    let Ok(text) = response.text().await else {
        return Outcome::NoAnswer;
    };
    if status != 200 {
        return Outcome::Failed(status);
    }
    if !streamed {
        let Ok(answer) = serde_json::from_str::<Value>(&text) else {
            return Outcome::NoAnswer;
        };
        let output = answer["outputs"].as_array().map(|o| o.iter().map(output_text).collect()).unwrap_or_default();
        let conversation_id = answer["conversation_id"].as_str().unwrap_or_default().to_owned();
        return Outcome::Answered { conversation_id, output };
    }
    let (mut conversation_id, mut output, mut done) = (String::new(), String::new(), false);
    for block in text.split("\n\n") {
        let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else { continue };
        let Ok(event) = serde_json::from_str::<Value>(data.trim()) else {
            return Outcome::NoAnswer; // A block cut short by a dying server.
        };
        match event["type"].as_str() {
            Some("conversation.response.started") => {
                conversation_id = event["conversation_id"].as_str().unwrap_or_default().to_owned()
            }
            Some("message.output.delta") => output.push_str(event["content"].as_str().unwrap_or_default()),
            Some("conversation.response.done") => done = true,
            Some("conversation.response.error") => return Outcome::Failed(event["code"].as_u64().unwrap_or(0) as u16),
            _ => {}
        }
    }
    if done {
        Outcome::Answered { conversation_id, output }
    } else {
        Outcome::NoAnswer
    }
}

fn output_text(entry: &Value) -> String {
    match &entry["content"] {
        Value::String(text) => text.clone(),
        Value::Array(chunks) => chunks.iter().filter_map(|c| c["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// A turn a writer saw acknowledged: it must be in the history, forever.
#[derive(Debug, Clone)]
struct Ack {
    conversation_id: String,
    input: String,
}

/// What the writers saw, shared with the test.
#[derive(Default)]
struct Tally {
    acks: Mutex<Vec<Ack>>,
    /// Answers other than 200 and 503, with what was asked: each one a bug.
    unexpected: Mutex<Vec<String>>,
    statuses: Mutex<BTreeMap<String, usize>>,
    stop: AtomicBool,
    /// Set while the test holds the database down: every answer then must be a 503.
    outage: AtomicBool,
    outage_answers: AtomicUsize,
}

impl Tally {
    fn count(&self, what: String) {
        *self.statuses.lock().unwrap_or_else(|e| e.into_inner()).entry(what).or_default() += 1;
    }
}

/// Appends turns to its own conversations until told to stop, starting a new conversation
/// every 40 turns so histories stay short. Every third turn is streamed; every other one
/// carries a (fresh) `Idempotency-Key`, whose claim a kill may leave behind. `bases` are
/// the replicas; each turn goes to a random one.
async fn writer(id: usize, bases: Vec<String>, tally: Arc<Tally>, seed: u64) {
    let client = http();
    let mut rng = Rng(seed | 1);
    let mut conversation: Option<String> = None;
    let mut in_conversation = 0;
    let mut n = 0u64;
    // The previous turn got no answer (its replica was killed): it may still commit (a
    // Postgres COMMIT sent just before the kill completes), so the next turn on the same
    // conversation may rightly lose the compare-and-set on its head with a 409.
    let mut fate_unknown = false;
    while !tally.stop.load(Ordering::Relaxed) {
        n += 1;
        let input = format!("w{id} t{n}");
        let stream = n % 3 == 0;
        let base = &bases[rng.below(bases.len() as u64) as usize];
        let (url, body) = match &conversation {
            Some(c) => (format!("{base}/v1/conversations/{c}"), json!({"inputs": input, "stream": stream})),
            None => (format!("{base}/v1/conversations"), json!({"model": "echo", "inputs": input, "stream": stream})),
        };
        let during_outage = tally.outage.load(Ordering::SeqCst);
        let key = (n % 2 == 0).then(|| format!("w{id}-t{n}"));
        let outcome = turn_with_key(&client, &url, &body, key.as_deref()).await;
        let still_outage = tally.outage.load(Ordering::SeqCst);
        let kind = if stream { "stream" } else { "json" };
        match &outcome {
            Outcome::Answered { conversation_id, output } => {
                tally.count(format!("{kind} 200"));
                if output != &input || conversation_id.is_empty() {
                    tally
                        .unexpected
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{url} {body}: answered {output:?} in {conversation_id:?}"));
                }
                let ack = Ack { conversation_id: conversation_id.clone(), input: input.clone() };
                tally.acks.lock().unwrap_or_else(|e| e.into_inner()).push(ack);
                conversation = Some(conversation_id.clone());
                in_conversation += 1;
                if in_conversation >= 40 {
                    conversation = None;
                    in_conversation = 0;
                }
            }
            Outcome::Failed(status) => {
                tally.count(format!("{kind} {status}"));
                if *status != 503 && !(*status == 409 && fate_unknown) {
                    tally
                        .unexpected
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{url} {body}: status {status}"));
                }
            }
            Outcome::NoAnswer => tally.count(format!("{kind} no answer")),
        }
        fate_unknown = outcome == Outcome::NoAnswer;
        if during_outage && still_outage {
            // The whole request ran while the database was down: only a 503 is right (the
            // server itself is up, so it must answer).
            tally.outage_answers.fetch_add(1, Ordering::Relaxed);
            if outcome != Outcome::Failed(503) {
                tally
                    .unexpected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("during the outage {url} {body}: {outcome:?}"));
            }
        }
        if !matches!(outcome, Outcome::Answered { .. }) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn spawn_writers(
    count: usize,
    bases: &[String],
    tally: &Arc<Tally>,
    rng: &mut Rng,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count).map(|id| tokio::spawn(writer(id, bases.to_vec(), tally.clone(), rng.next()))).collect()
}

async fn stop_writers(tally: &Tally, writers: Vec<tokio::task::JoinHandle<()>>) {
    tally.stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("a writer panicked");
    }
}

/// Every conversation the server lists, with its history.
async fn all_histories(base: &str) -> BTreeMap<String, Vec<Value>> {
    let client = http();
    let mut ids = Vec::new();
    for page in 0.. {
        let url = format!("{base}/v1/conversations?page={page}&page_size=1000");
        let listed: Value = client.get(&url).send().await.expect("list").json().await.expect("a JSON list");
        let listed = listed.as_array().expect("a list of conversations").clone();
        if listed.is_empty() {
            break;
        }
        ids.extend(listed.iter().map(|c| c["id"].as_str().expect("an id").to_owned()));
    }
    let mut histories = BTreeMap::new();
    for id in ids {
        let response = client.get(format!("{base}/v1/conversations/{id}/history")).send().await.expect("history");
        assert_eq!(response.status(), 200, "the history of {id}");
        let body: Value = response.json().await.expect("a JSON history");
        histories.insert(id, body["entries"].as_array().expect("entries").clone());
    }
    histories
}

/// Nothing acknowledged lost, nothing torn, nothing twice: each history is whole turns (an
/// input, then the echo model's output repeating it), each input at most once, in the
/// order its writer sent them; every acknowledged turn is in its conversation.
async fn assert_consistent(base: &str, tally: &Tally, others: &[&str]) {
    let histories = all_histories(base).await;
    for (id, entries) in histories.iter().filter(|(id, _)| !others.contains(&id.as_str())) {
        assert!(entries.len() % 2 == 0, "a torn turn in {id}: {entries:#?}");
        let mut seen = BTreeSet::new();
        let mut last: Option<(String, u64)> = None;
        for pair in entries.chunks(2) {
            assert_eq!(pair[0]["type"], "message.input", "{id}: {entries:#?}");
            assert_eq!(pair[1]["type"], "message.output", "an input without its output in {id}: {entries:#?}");
            let input = output_text(&pair[0]);
            assert_eq!(output_text(&pair[1]), input, "{id}: an output that is not its input's");
            assert!(seen.insert(input.clone()), "{id} holds the turn {input:?} twice");
            let (writer, number) = input.split_once(" t").expect("a writer's input");
            let number: u64 = number.parse().expect("a turn number");
            if let Some((last_writer, last_number)) = &last {
                assert_eq!(last_writer, writer, "{id} mixes writers");
                assert!(*last_number < number, "{id}: turn {number} after {last_number}");
            }
            last = Some((writer.to_owned(), number));
        }
    }
    let acks = tally.acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for ack in &acks {
        let entries = histories
            .get(&ack.conversation_id)
            .unwrap_or_else(|| panic!("the acknowledged conversation {} is gone", ack.conversation_id));
        assert!(
            entries.iter().any(|e| e["type"] == "message.input" && output_text(e) == ack.input),
            "the acknowledged turn {:?} is missing from {}",
            ack.input,
            ack.conversation_id
        );
    }
    let unexpected = tally.unexpected.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(unexpected.is_empty(), "answers that are bugs:\n{}", unexpected.join("\n"));
    eprintln!(
        "{} acknowledged turns in {} conversations; answers: {:?}",
        acks.len(),
        histories.len(),
        tally.statuses.lock().unwrap_or_else(|e| e.into_inner())
    );
}

const WRITERS: usize = 8;
const KILLS: usize = 8;

/// kill -9 of the only server, at random moments under eight writers, restarted on the
/// same file each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_survives_kill_9_under_concurrent_writers() {
    let mut rng = Rng::from_env("sqlite kill -9 soak");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("palaver.db");
    let url = format!("sqlite://{}", file.display());
    let mut palaver = Palaver::start(&[("DATABASE_URL", &url)], dir.path().join("palaver.log"));
    palaver.ready().await;
    let tally = Arc::new(Tally::default());
    let writers = spawn_writers(WRITERS, &[palaver.base()], &tally, &mut rng);
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1_200))).await;
        palaver.restart().await;
    }
    tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
    // The last kill lands under load too; the file is then checked cold, as found.
    palaver.kill9();
    stop_writers(&tally, writers).await;

    let db = rusqlite::Connection::open(&file).expect("the database opens");
    let integrity: Vec<String> = db
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("integrity_check runs");
    assert_eq!(integrity, ["ok"], "PRAGMA integrity_check");
    drop(db);

    palaver.restart().await;
    assert_consistent(&palaver.base(), &tally, &[]).await;
    assert!(tally.acks.lock().unwrap_or_else(|e| e.into_inner()).len() >= 50, "the soak did too little to mean much");
}

/// Two replicas on one Postgres database, either one kill -9ed at random moments while
/// eight writers spread their turns over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_survive_kill_9_under_concurrent_writers() {
    let Some(cluster) = Cluster::start() else { return };
    let mut rng = Rng::from_env("postgres kill -9 soak");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = cluster.url();
    let env = [("DATABASE_URL", url.as_str()), ("PALAVER_DB_MAX_CONNECTIONS", "8")];
    let mut a = Palaver::start(&env, dir.path().join("a.log"));
    a.ready().await; // The first creates the database and migrates it; then the second.
    let mut b = Palaver::start(&env, dir.path().join("b.log"));
    b.ready().await;
    let tally = Arc::new(Tally::default());
    let writers = spawn_writers(WRITERS, &[a.base(), b.base()], &tally, &mut rng);
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1_200))).await;
        if rng.below(2) == 0 {
            a.restart().await
        } else {
            b.restart().await
        }
    }
    tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
    a.kill9();
    b.kill9();
    stop_writers(&tally, writers).await;

    a.restart().await;
    assert_consistent(&a.base(), &tally, &[]).await;
    assert!(tally.acks.lock().unwrap_or_else(|e| e.into_inner()).len() >= 50, "the soak did too little to mean much");
}

/// Postgres crashes (`pg_ctl stop -m immediate`) under four writers and stays down a few
/// seconds: every answer in between is a 503, `/health` too, and two turns whose model was
/// still answering when it crashed (one streamed, one JSON) end in a 503 and store nothing;
/// after the restart palaver serves again within seconds by itself, and nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_crash_under_load_is_503s_then_recovery_and_nothing_lost() {
    let Some(cluster) = Cluster::start() else { return };
    let mut rng = Rng::from_env("postgres crash-restart");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (proxy, proxy_addr) = Proxy::start(fake_upstream().await).await;
    // The writers keep the built-in echo model; the model `slow` goes through the proxy.
    let config = dir.path().join("palaver.toml");
    let toml = format!(
        "[[upstream]]\nname = \"slow\"\nurl = \"http://{proxy_addr}/v1\"\n\n[[route]]\nmodel = \"slow\"\nupstream = \"slow\"\n"
    );
    std::fs::write(&config, toml).expect("the config file");
    let url = cluster.url();
    let config = config.display().to_string();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PALAVER_DB_ACQUIRE_TIMEOUT_MS", "1000"),
        ("PALAVER_CONFIG", config.as_str()),
    ];
    let mut palaver = Palaver::start(&env, dir.path().join("palaver.log"));
    palaver.ready().await;
    let client = http();
    let base = palaver.base();
    let mut held = Vec::new();
    for stream in [true, false] {
        let body = json!({"model": "slow", "inputs": "before", "stream": stream});
        let Outcome::Answered { conversation_id, .. } = turn(&client, &format!("{base}/v1/conversations"), &body).await
        else {
            panic!("a turn of the model `slow` before the crash")
        };
        held.push((conversation_id, stream));
    }
    let tally = Arc::new(Tally::default());
    let writers = spawn_writers(4, &[palaver.base()], &tally, &mut rng);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    proxy.set(Fault::Gated);
    let in_flight: Vec<_> = held
        .iter()
        .map(|(id, stream)| {
            let (client, url) = (client.clone(), format!("{base}/v1/conversations/{id}"));
            let body = json!({"inputs": "in flight", "stream": stream});
            tokio::spawn(async move { turn(&client, &url, &body).await })
        })
        .collect();
    let waiting = Instant::now();
    while proxy.held.load(Ordering::SeqCst) < in_flight.len() {
        assert!(waiting.elapsed() < Duration::from_secs(20), "the turns of `slow` did not reach the proxy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cluster.crash();
    tally.outage.store(true, Ordering::SeqCst);
    proxy.open.store(true, Ordering::SeqCst);
    for ((id, stream), turn) in held.iter().zip(in_flight) {
        let outcome = turn.await.expect("the in-flight turn");
        assert_eq!(outcome, Outcome::Failed(503), "a turn (stream: {stream}) of {id} that was running at the crash");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let health = client.get(format!("{}/health", palaver.base())).send().await.expect("palaver answers");
        assert_eq!(health.status(), 503, "/health while Postgres is down");
        let body: Value = health.json().await.expect("an error envelope");
        assert_eq!(body["code"], "store_unavailable");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tally.outage.store(false, Ordering::SeqCst);
    cluster.start_server();
    let restarted = Instant::now();
    loop {
        let health = client.get(format!("{}/health", palaver.base())).send().await.expect("palaver answers");
        if health.status() == 200 {
            break;
        }
        assert_eq!(health.status(), 503);
        assert!(restarted.elapsed() < Duration::from_secs(15), "palaver did not recover within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("recovered {:?} after Postgres was back", restarted.elapsed());
    let acked_before = tally.acks.lock().unwrap_or_else(|e| e.into_inner()).len();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop_writers(&tally, writers).await;

    let outage_answers = tally.outage_answers.load(Ordering::Relaxed);
    assert!(outage_answers > 0, "no writer's request fell wholly within the outage");
    let acked_after = tally.acks.lock().unwrap_or_else(|e| e.into_inner()).len();
    assert!(acked_after > acked_before, "the writers' turns succeed again after the recovery");
    for (id, _) in &held {
        let history: Value = client
            .get(format!("{base}/v1/conversations/{id}/history"))
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("JSON");
        let texts: Vec<String> = history["entries"].as_array().expect("entries").iter().map(output_text).collect();
        assert_eq!(texts, ["before", "echo: before"], "the turn that failed at the crash left nothing in {id}");
    }
    let held: Vec<&str> = held.iter().map(|(id, _)| id.as_str()).collect();
    assert_consistent(&palaver.base(), &tally, &held).await;
}

/// What the fault proxy does to the upstream's answers.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    Pass,
    /// Nothing at all, the connection held open.
    StallBeforeHeaders,
    /// The headers, then silence with the connection held open.
    StallAfterHeaders,
    /// A TCP reset instead of an answer.
    ResetBeforeHeaders,
    /// The headers and part of the body, then a TCP reset.
    ResetMidStream,
    /// The headers and part of the body, then a clean close (FIN) mid-event.
    CloseMidStream,
    /// Everything, in small pieces with pauses shorter than the read timeout.
    Trickle,
    /// The headers and the first event, then the rest once the test opens the gate.
    Gated,
}

const FAULTS: [Fault; 8] = [
    Fault::Pass,
    Fault::StallBeforeHeaders,
    Fault::StallAfterHeaders,
    Fault::ResetBeforeHeaders,
    Fault::ResetMidStream,
    Fault::CloseMidStream,
    Fault::Trickle,
    Fault::Gated,
];

const TRICKLE_PAUSE: Duration = Duration::from_millis(250);
const READ_TIMEOUT_MS: u64 = 1_000;

impl Fault {
    /// How much of the answer (`seen` so far) goes through before the fault strikes; `None`
    /// while it all goes through.
    fn cut(self, seen: &[u8]) -> Option<usize> {
        let header_end = seen.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        match self {
            Fault::Pass | Fault::Trickle => None,
            Fault::StallBeforeHeaders | Fault::ResetBeforeHeaders => Some(0),
            Fault::StallAfterHeaders => header_end,
            Fault::ResetMidStream | Fault::CloseMidStream | Fault::Gated => {
                let end = header_end?;
                let body = &seen[end..];
                let first = match body.windows(2).position(|w| w == b"\n\n") {
                    Some(event_end) => event_end + 2,
                    // A JSON answer (a turn nobody streams) has no events: half of it.
                    None if body.starts_with(b"{") && body.len() > 1 => body.len() / 2,
                    None => return None,
                };
                if self == Fault::Gated {
                    return Some(end + first);
                }
                // The body's first event and half of what follows: cut mid-event.
                Some(end + first + (seen.len() - end - first) / 2)
            }
        }
    }
}

/// A TCP proxy in front of the upstream; each connection gets the fault set when it opens
/// (the fake upstream closes each connection after its answer, so one connection is one
/// model call).
#[derive(Default)]
struct Proxy {
    fault: AtomicU8,
    /// Opens the gate of `Fault::Gated` connections.
    open: AtomicBool,
    /// `Fault::Gated` connections waiting at the gate.
    held: AtomicUsize,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> (Arc<Proxy>, std::net::SocketAddr) {
        let proxy = Arc::new(Proxy::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("the proxy binds");
        let addr = listener.local_addr().expect("an address");
        let shared = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = proxy_connection(client, upstream, &shared).await;
                });
            }
        });
        (proxy, addr)
    }

    fn set(&self, fault: Fault) {
        let index = FAULTS.iter().position(|f| *f == fault).expect("a listed fault");
        self.fault.store(index as u8, Ordering::SeqCst);
    }
}

async fn proxy_connection(
    client: tokio::net::TcpStream,
    upstream: std::net::SocketAddr,
    proxy: &Proxy,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut fault = FAULTS[proxy.fault.load(Ordering::SeqCst) as usize];
    let server = tokio::net::TcpStream::connect(upstream).await?;
    if matches!(fault, Fault::ResetBeforeHeaders | Fault::ResetMidStream) {
        // With a zero linger, closing the socket sends RST instead of FIN.
        client.set_zero_linger()?;
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
    let mut buffer = vec![0u8; 16 * 1024];
    let (mut seen, mut written) = (Vec::new(), 0);
    loop {
        let n = server_read.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buffer[..n]);
        if let Some(cut) = fault.cut(&seen) {
            client_write.write_all(&seen[written..cut.max(written)]).await?;
            if fault == Fault::Gated {
                written = cut;
                proxy.held.fetch_add(1, Ordering::SeqCst);
                while !proxy.open.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                proxy.held.fetch_sub(1, Ordering::SeqCst);
                client_write.write_all(&seen[written..]).await?;
                written = seen.len();
                fault = Fault::Pass;
                continue;
            }
            match fault {
                Fault::ResetBeforeHeaders | Fault::ResetMidStream => requests.abort(),
                Fault::CloseMidStream => client_write.shutdown().await?,
                // Held open and silent until palaver gives up on it.
                _ => {
                    let _ = requests.await;
                }
            }
            return Ok(()); // Dropping both halves closes the socket (a reset with zero linger).
        }
        // Small enough that even a short JSON answer takes longer in all than the read timeout.
        let pieces = if fault == Fault::Trickle { 48 } else { seen.len() };
        for piece in seen[written..].chunks(pieces) {
            client_write.write_all(piece).await?;
            if fault == Fault::Trickle {
                tokio::time::sleep(TRICKLE_PAUSE).await;
            }
        }
        written = seen.len();
    }
    client_write.shutdown().await?;
    let _ = requests.await;
    Ok(())
}

/// An OpenAI-compatible upstream answering "echo: <the last user message>", streamed word by
/// word when asked (else one JSON answer), closing each connection after its answer.
async fn fake_upstream() -> std::net::SocketAddr {
    use axum::routing::post;
    async fn chat(axum::Json(body): axum::Json<Value>) -> axum::response::Response {
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .map(output_text)
            .unwrap_or_default();
        let text = format!("echo: {last}");
        if body["stream"] != true {
            let answer = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "fake",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]});
            return axum::response::Response::builder()
                .header("content-type", "application/json")
                .header("connection", "close")
                .body(axum::body::Body::from(answer.to_string()))
                .expect("a response");
        }
        let mut events = String::new();
        let chunk = |delta: Value, finish: Option<&str>| {
            let body = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "fake",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {body}\n\n")
        };
        for (i, word) in text.split(' ').enumerate() {
            let piece = if i == 0 { word.to_owned() } else { format!(" {word}") };
            events.push_str(&chunk(json!({"role": "assistant", "content": piece}), None));
        }
        events.push_str(&chunk(json!({}), Some("stop")));
        events.push_str("data: [DONE]\n\n");
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .header("connection", "close")
            .body(axum::body::Body::from(events))
            .expect("a response")
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("the upstream binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(
        async move { axum::serve(listener, axum::Router::new().route("/v1/chat/completions", post(chat))).await },
    );
    addr
}

/// Upstream faults on the wire, for JSON and streamed turns alike: a stall (before or after
/// the headers) is a 504 after the read timeout, a reset or a close mid-answer a 502, and
/// none stores anything; a trickle slower in all than the read timeout (but never silent
/// that long) succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stalls_resets_and_trickles_through_a_fault_proxy() {
    upstream_faults(false).await;
}

/// The same faults when the environment names an HTTP proxy (`HTTP_PROXY`) for the
/// upstream: palaver sends its calls to the proxy, here the fault proxy forwarding the
/// absolute-form requests to the upstream, so each fault strikes only if the call went
/// through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_through_the_http_proxy_the_environment_names() {
    upstream_faults(true).await;
}

async fn upstream_faults(through_http_proxy: bool) {
    let upstream = fake_upstream().await;
    let (proxy, proxy_addr) = Proxy::start(upstream).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database = format!("sqlite://{}", dir.path().join("palaver.db").display());
    let (upstream_url, http_proxy) = match through_http_proxy {
        true => (format!("http://{upstream}/v1"), format!("http://{proxy_addr}")),
        false => (format!("http://{proxy_addr}/v1"), String::new()),
    };
    let read_timeout = READ_TIMEOUT_MS.to_string();
    let mut env = vec![
        ("DATABASE_URL", database.as_str()),
        ("PALAVER_UPSTREAM_URL", upstream_url.as_str()),
        ("PALAVER_UPSTREAM_READ_TIMEOUT_MS", read_timeout.as_str()),
    ];
    if through_http_proxy {
        env.push(("HTTP_PROXY", http_proxy.as_str()));
    }
    let mut palaver = Palaver::start(&env, dir.path().join("palaver.log"));
    palaver.ready().await;
    let client = http();
    let base = palaver.base();

    let first =
        turn(&client, &format!("{base}/v1/conversations"), &json!({"model": "m", "inputs": "hello", "stream": false}))
            .await;
    let Outcome::Answered { conversation_id: id, output } = first else { panic!("the first turn: {first:?}") };
    assert_eq!(output, "echo: hello");
    let append = format!("{base}/v1/conversations/{id}");
    let history = |client: reqwest::Client| {
        let url = format!("{base}/v1/conversations/{id}/history");
        async move {
            let body: Value = client.get(url).send().await.expect("history").json().await.expect("JSON");
            body["entries"].as_array().expect("entries").iter().map(output_text).collect::<Vec<_>>()
        }
    };

    // The failure each fault must end in; `None`: the turn succeeds.
    let cases = [
        (Fault::StallBeforeHeaders, Some(504)),
        (Fault::StallAfterHeaders, Some(504)),
        (Fault::ResetBeforeHeaders, Some(502)),
        (Fault::ResetMidStream, Some(502)),
        (Fault::CloseMidStream, Some(502)),
        (Fault::Trickle, None),
    ];
    let mut expected = vec!["hello".to_owned(), "echo: hello".to_owned()];
    for (case, wanted) in cases {
        for stream in [false, true] {
            proxy.set(case);
            let input = format!("{case:?} stream={stream}");
            let started = Instant::now();
            let outcome = turn(&client, &append, &json!({"inputs": input, "stream": stream})).await;
            proxy.set(Fault::Pass);
            match wanted {
                Some(status) => assert_eq!(outcome, Outcome::Failed(status), "{input}"),
                None => {
                    let output = format!("echo: {input}");
                    assert_eq!(outcome, Outcome::Answered { conversation_id: id.clone(), output: output.clone() });
                    // The pauses add up to more than the read timeout: it bounds silence only.
                    assert!(started.elapsed() > Duration::from_millis(READ_TIMEOUT_MS), "the answer trickled");
                    expected.extend([input.clone(), output]);
                }
            }
            assert_eq!(history(client.clone()).await, expected, "after {input}: only whole, answered turns");
        }
    }
    // The faults left nothing behind that stops the next turn.
    let last = turn(&client, &append, &json!({"inputs": "after", "stream": true})).await;
    assert_eq!(last, Outcome::Answered { conversation_id: id.clone(), output: "echo: after".to_owned() });
}
