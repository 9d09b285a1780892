//! `cargo bench --bench turns`: what palaver costs on top of the model.
//!
//! Starts the real `palaver` binary (release build) as a child process, so its CPU time and
//! memory can be read from `/proc`, against a fast fake OpenAI-compatible upstream running
//! in this process. Every figure is measured side by side with its floor: the same request
//! sent straight to the fake upstream. Each measurement is repeated and the median of the
//! runs is printed with the budget beside it. Loopback only; bounded in requests and time.
//!
//! Environment: `BENCH_BACKENDS` (`sqlite,postgres,postgres-async`; `postgres-async` is the
//! same server with `synchronous_commit=off` for palaver's sessions, so that palaver's own
//! cost shows apart from the commit's wait for the disk), `BENCH_POSTGRES_URL` (admin URL,
//! default `postgres://postgres@127.0.0.1:5432/test`), `BENCH_STREAMS` (10000),
//! `BENCH_RUNS` (3), `BENCH_PALAVER` (the palaver binary to measure; default: this build's),
//! `BENCH_MODES` (`outside,inside`: `outside` runs the fake upstream and the load generator
//! as processes of their own — this binary re-run with `BENCH_ROLE` — as an outside client
//! sees palaver; `inside` keeps both in the bench process and measures the rest). The
//! outside mode ends with its two ratios measured again against a model-like upstream, one
//! that spends 200 µs of CPU on one thread per answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

// ---------------------------------------------------------------------------------------
// The fake upstream: answers every chat request at once with a short streamed answer, or,
// in hold mode, sends the first chunk and waits for `release`.

#[derive(Clone)]
struct Upstream {
    hold: Arc<std::sync::atomic::AtomicBool>,
    release: Arc<Notify>,
    held: Arc<AtomicUsize>,
}

fn chunk(delta: Value, finish: Option<&str>) -> Bytes {
    let body = json!({"id": "b", "object": "chat.completion.chunk", "created": 1, "model": "bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    Bytes::from(format!("data: {body}\n\n"))
}

fn answer(upstream: Upstream) -> axum::body::Body {
    let stream = async_stream::stream! {
        yield Ok::<Bytes, Infallible>(chunk(json!({"role": "assistant", "content": "Hello"}), None));
        if upstream.hold.load(Ordering::SeqCst) {
            upstream.held.fetch_add(1, Ordering::SeqCst);
            let released = upstream.release.notified();
            released.await;
        }
        yield Ok(chunk(json!({"content": " from the"}), None));
        yield Ok(chunk(json!({"content": " bench."}), None));
        yield Ok(chunk(json!({}), Some("stop")));
        yield Ok(Bytes::from("data: {\"id\":\"b\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"total_tokens\":13}}\n\ndata: [DONE]\n\n"));
    };
    axum::body::Body::from_stream(stream)
}

/// The handoff function to call, when the request offers one and its last message is the
/// user's (the first round of a turn): the bench's handoff turns. Byte searches, so that
/// the other requests cost the fake upstream nothing more.
fn handoff_to(body: &[u8]) -> Option<String> {
    let last = |needle: &[u8]| body.windows(needle.len()).rposition(|w| w == needle);
    // Messages come first, the offered tools last: earlier handoffs of the conversation are
    // in the messages too.
    let name = last(b"\"name\":\"handoff_to_")? + 8;
    let last_role = last(b"\"role\":\"")? + 8;
    if !body[last_role..].starts_with(b"user") {
        return None;
    }
    let end = body[name..].iter().position(|b| *b == b'"')?;
    Some(String::from_utf8_lossy(&body[name..name + end]).into_owned())
}

fn hand_off(function: String) -> axum::body::Body {
    let call = json!({"tool_calls": [{"index": 0, "id": "call00001", "type": "function",
        "function": {"name": function, "arguments": "{}"}}]});
    let stream = async_stream::stream! {
        yield Ok::<Bytes, Infallible>(chunk(call, None));
        yield Ok(chunk(json!({}), Some("tool_calls")));
        yield Ok(Bytes::from("data: {\"id\":\"b\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1,\"total_tokens\":11}}\n\ndata: [DONE]\n\n"));
    };
    axum::body::Body::from_stream(stream)
}

/// The same answer as `answer`, as one JSON body: what a client that does not stream asks
/// for.
fn whole_answer() -> axum::body::Body {
    axum::body::Body::from(
        "{\"id\":\"b\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"bench\",\"choices\":[{\"index\":0,\
         \"message\":{\"role\":\"assistant\",\"content\":\"Hello from the bench.\"},\"finish_reason\":\"stop\"}],\
         \"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"total_tokens\":13}}",
    )
}

fn whole_hand_off(function: &str) -> axum::body::Body {
    let body = json!({"id": "b", "object": "chat.completion", "created": 1, "model": "bench",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call00001", "type": "function", "function": {"name": function, "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}});
    axum::body::Body::from(body.to_string())
}

/// Spends `cost` of this thread's CPU, as a model server's own work on an answer would.
fn spin(cost: Duration) {
    let until = Instant::now() + cost;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// `cost`: CPU the upstream spends on each answer before sending it (none: answers at once).
async fn start_upstream(cost: Option<Duration>) -> (String, Upstream) {
    let upstream = Upstream { hold: Default::default(), release: Arc::new(Notify::new()), held: Default::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = upstream.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let _ = socket.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let streamed = body.windows(13).any(|w| w == b"\"stream\":true");
                        if let Some(cost) = cost {
                            spin(cost);
                        }
                        let (body, content_type) = match (handoff_to(&body), streamed) {
                            (Some(target), true) => (hand_off(target), "text/event-stream"),
                            (Some(target), false) => (whole_hand_off(&target), "application/json"),
                            (None, true) => (answer(state), "text/event-stream"),
                            (None, false) => (whole_answer(), "application/json"),
                        };
                        let response =
                            hyper::Response::builder().header("content-type", content_type).body(body).unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                // One multiplexed connection must carry every held stream.
                builder.http2().max_concurrent_streams(None);
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(socket), service).await;
            });
        }
    });
    (format!("http://{addr}/v1"), upstream)
}

// ---------------------------------------------------------------------------------------
// The palaver child process.

struct Palaver {
    child: Child,
    base: String,
    startup: Duration,
}

impl Drop for Palaver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn spawn_palaver(database_url: &str, upstream_url: &str, http2: bool, dir: &std::path::Path) -> Palaver {
    let config = dir.join(format!("palaver-{}.toml", free_port()));
    std::fs::write(
        &config,
        format!("[[upstream]]\nname = \"bench\"\nurl = \"{upstream_url}\"\nhttp2 = {http2}\n\n[[route]]\nmodel = \"*\"\nupstream = \"bench\"\n"),
    )
    .unwrap();
    let port = free_port();
    let started = Instant::now();
    // `BENCH_PALAVER`: another build to measure (A/B against this one, alternating runs).
    let binary = std::env::var("BENCH_PALAVER").unwrap_or_else(|_| env!("CARGO_BIN_EXE_palaver").to_owned());
    let child = Command::new(binary)
        .env("PALAVER_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", database_url)
        .env("PALAVER_CONFIG", &config)
        .env("PALAVER_DB_MAX_CONNECTIONS", "16")
        // The default log level, as operators run it (a line per committed turn).
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the palaver binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    loop {
        if let Ok(response) = client.get(format!("{base}/health")).send().await {
            if response.status().is_success() {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "palaver became healthy");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Palaver { child, base, startup: started.elapsed() }
}

/// (utime + stime) of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Resident memory of a process in KiB (`VmRSS`, or `VmHWM` for the peak).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Requests.

async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = client.post(url).json(body).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// Sends a streamed request and returns (time to the first delta, time to the end).
async fn stream_timing(client: &reqwest::Client, url: &str, body: &Value, first_marker: &str) -> (Duration, Duration) {
    let started = Instant::now();
    let response = client.post(url).json(body).send().await.unwrap();
    assert!(response.status().is_success());
    let mut body = response.bytes_stream();
    let mut first = None;
    let mut seen = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        if first.is_none() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(first_marker) {
                first = Some(started.elapsed());
            }
        }
    }
    (first.expect("a first delta"), started.elapsed())
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn median(mut values: Vec<f64>) -> f64 {
    percentile(&mut values, 0.5)
}

/// The messages palaver sends upstream for a conversation's history (to replay as floor).
async fn upstream_messages(client: &reqwest::Client, base: &str, conversation_id: &str, next: &str) -> Vec<Value> {
    let history = client.get(format!("{base}/v1/conversations/{conversation_id}/history")).send().await.unwrap();
    let history: Value = history.json().await.unwrap();
    let mut messages: Vec<Value> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let role = if e["type"] == "message.input" { "user" } else { "assistant" };
            json!({"role": role, "content": e["content"]})
        })
        .collect();
    messages.push(json!({"role": "user", "content": next}));
    messages
}

async fn new_conversation(client: &reqwest::Client, base: &str, turns: usize) -> String {
    let start =
        post_json(client, &format!("{base}/v1/conversations"), &json!({"model": "bench", "inputs": "Hi there"})).await;
    let id = start["conversation_id"].as_str().unwrap().to_owned();
    for n in 1..turns {
        post_json(client, &format!("{base}/v1/conversations/{id}"), &json!({"inputs": format!("Question {n}")})).await;
    }
    id
}

// ---------------------------------------------------------------------------------------
// The report.

struct Row {
    figure: String,
    value: String,
    floor: String,
    budget: String,
    met: Option<bool>,
}

fn row(figure: &str, value: String, floor: String, budget: &str, met: Option<bool>) -> Row {
    Row { figure: figure.to_owned(), value, floor, budget: budget.to_owned(), met }
}

fn ms(seconds: f64) -> String {
    format!("{:.3} ms", seconds * 1000.0)
}

async fn bench_backend(
    name: &str,
    database_url: &str,
    upstream_url: &str,
    upstream: &Upstream,
    runs: usize,
    streams: usize,
) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
    let mut rows = Vec::new();
    let overhead_budget = if name == "sqlite" { 0.001 } else { 0.0015 };

    // Footprint: start to healthy and idle RSS, over fresh processes.
    let mut startups = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..runs {
        let db = fresh_database(name, database_url, dir.path()).await;
        let palaver = spawn_palaver(&db, upstream_url, false, dir.path()).await;
        startups.push(palaver.startup.as_secs_f64());
        tokio::time::sleep(Duration::from_millis(300)).await;
        idle.push(memory_kib(palaver.child.id(), "VmRSS:") as f64);
    }
    let startup = median(startups);
    let idle_rss = median(idle);
    rows.push(row(
        "start to healthy /health",
        ms(startup),
        "-".into(),
        "≤ 200 ms (SQLite)",
        (name == "sqlite").then_some(startup <= 0.2),
    ));
    rows.push(row(
        "idle RSS",
        format!("{:.1} MiB", idle_rss / 1024.0),
        "-".into(),
        "≤ 30 MiB",
        Some(idle_rss <= 30.0 * 1024.0),
    ));

    let db = fresh_database(name, database_url, dir.path()).await;
    let palaver = spawn_palaver(&db, upstream_url, false, dir.path()).await;
    let base = palaver.base.clone();
    let pid = palaver.child.id();
    let chat_url = format!("{upstream_url}/chat/completions");

    // Overhead per turn at concurrency 1: palaver's append against the same request sent
    // straight upstream, interleaved so both see the same noise.
    let conversations: Vec<String> =
        futures::future::join_all((0..30).map(|_| new_conversation(&client, &base, 5))).await;
    let (mut p50s, mut p99s, mut floors50) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let id = &conversations[i % conversations.len()];
            let input = format!("Turn {i}");
            let messages = upstream_messages(&client, &base, id, &input).await;
            let floor_body = json!({"model": "bench", "messages": messages, "stream": true});
            let started = Instant::now();
            let _ = stream_timing(&client, &chat_url, &floor_body, "data:").await;
            floor.push(started.elapsed().as_secs_f64());
            let started = Instant::now();
            post_json(&client, &format!("{base}/v1/conversations/{id}"), &json!({"inputs": input})).await;
            ours.push(started.elapsed().as_secs_f64());
        }
        let floor50 = percentile(&mut floor, 0.5);
        let floor99 = percentile(&mut floor, 0.99);
        p50s.push(percentile(&mut ours, 0.5) - floor50);
        p99s.push(percentile(&mut ours, 0.99) - floor99);
        floors50.push(floor50);
    }
    let (p50, p99, floor50) = (median(p50s), median(p99s), median(floors50));
    let budget = if name == "sqlite" { "p50 ≤ 1 ms" } else { "p50 ≤ 1.5 ms" };
    rows.push(row("overhead per turn, p50 (c=1)", ms(p50), ms(floor50), budget, Some(p50 <= overhead_budget)));
    rows.push(row("overhead per turn, p99 (c=1)", ms(p99), "-".into(), "p99 ≤ 3 ms", Some(p99 <= 0.003)));

    // Throughput at concurrency 32, and palaver's own CPU time per turn: in model
    // conversations, and in agent conversations (which also read the agent version).
    let throughput = |workers: Vec<String>| {
        let (client, base, chat_url) = (client.clone(), base.clone(), chat_url.clone());
        async move {
            let (mut rates, mut floor_rates, mut cpus) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                let per_worker = 60;
                let floor_body =
                    json!({"model": "bench", "messages": [{"role": "user", "content": "Hi"}], "stream": true});
                let started = Instant::now();
                futures::future::join_all((0..32).map(|_| async {
                    for _ in 0..per_worker {
                        let _ = stream_timing(&client, &chat_url, &floor_body, "data:").await;
                    }
                }))
                .await;
                floor_rates.push((32 * per_worker) as f64 / started.elapsed().as_secs_f64());
                let cpu_before = cpu_seconds(pid);
                let started = Instant::now();
                futures::future::join_all(workers.iter().map(|id| {
                    let (client, base) = (&client, &base);
                    async move {
                        for n in 0..per_worker {
                            let body = json!({"inputs": format!("t{n}")});
                            post_json(client, &format!("{base}/v1/conversations/{id}"), &body).await;
                        }
                    }
                }))
                .await;
                let elapsed = started.elapsed().as_secs_f64();
                let turns = (32 * per_worker) as f64;
                rates.push(turns / elapsed);
                cpus.push((cpu_seconds(pid) - cpu_before) / turns);
            }
            (median(rates), median(floor_rates), median(cpus))
        }
    };
    let workers: Vec<String> = futures::future::join_all((0..32).map(|_| new_conversation(&client, &base, 1))).await;
    let (rate, floor_rate, cpu) = throughput(workers).await;
    rows.push(row("throughput (c=32)", format!("{rate:.0} turns/s"), format!("{floor_rate:.0} req/s"), "-", None));
    rows.push(row("palaver CPU per turn", format!("{:.0} µs", cpu * 1e6), "-".into(), "≤ 200 µs", Some(cpu <= 200e-6)));
    let agent = post_json(&client, &format!("{base}/v1/agents"), &json!({"model": "bench", "name": "bench"})).await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let workers: Vec<String> = futures::future::join_all((0..32).map(|_| {
        let (client, base, agent_id) = (&client, &base, &agent_id);
        async move {
            let body = json!({"agent_id": agent_id, "inputs": "Hi there"});
            let start = post_json(client, &format!("{base}/v1/conversations"), &body).await;
            start["conversation_id"].as_str().unwrap().to_owned()
        }
    }))
    .await;
    let (rate, floor_rate, cpu) = throughput(workers).await;
    rows.push(row(
        "agent conversations: throughput (c=32)",
        format!("{rate:.0} turns/s"),
        format!("{floor_rate:.0} req/s"),
        "-",
        None,
    ));
    rows.push(row(
        "agent conversations: palaver CPU per turn",
        format!("{:.0} µs", cpu * 1e6),
        "-".into(),
        "≤ 200 µs",
        Some(cpu <= 200e-6),
    ));

    // Handoff turns: agents A and B hand off to each other; the first round of every turn
    // hands off (the fake upstream calls the offered `handoff_to_…`), the second answers as
    // the target. Two model rounds per turn, one commit.
    let first = post_json(&client, &format!("{base}/v1/agents"), &json!({"model": "bench", "name": "A"})).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    let body = json!({"model": "bench", "name": "B", "handoffs": [first_id]});
    let second = post_json(&client, &format!("{base}/v1/agents"), &body).await;
    let patch = client
        .patch(format!("{base}/v1/agents/{first_id}"))
        .json(&json!({"handoffs": [second["id"]]}))
        .send()
        .await
        .unwrap();
    assert!(patch.status().is_success(), "agent A hands off to B");
    let starts: Vec<Value> = futures::future::join_all((0..32).map(|_| {
        let (client, base, agent_id) = (&client, &base, &first_id);
        async move {
            let body = json!({"agent_id": agent_id, "inputs": "Hi there"});
            post_json(client, &format!("{base}/v1/conversations"), &body).await
        }
    }))
    .await;
    // A build without handoffs (measured with `BENCH_PALAVER`) answers without one.
    if starts.iter().all(|start| start["outputs"][0]["type"] == "agent.handoff") {
        let workers = starts.iter().map(|start| start["conversation_id"].as_str().unwrap().to_owned()).collect();
        let (rate, floor_rate, cpu) = throughput(workers).await;
        rows.push(row(
            "handoff turns (2 rounds): throughput (c=32)",
            format!("{rate:.0} turns/s"),
            format!("{floor_rate:.0} req/s"),
            "-",
            None,
        ));
        let cpu = format!("{:.0} µs", cpu * 1e6);
        rows.push(row("handoff turns (2 rounds): palaver CPU per turn", cpu, "-".into(), "-", None));
    }

    // Time to first delta, streaming append, concurrency 1.
    let mut ttfd = Vec::new();
    let mut floor_ttfd = Vec::new();
    for _ in 0..runs {
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for i in 0..200 {
            let id = &conversations[i % conversations.len()];
            let floor_body = json!({"model": "bench", "messages": [{"role": "user", "content": "Hi"}], "stream": true});
            floor.push(stream_timing(&client, &chat_url, &floor_body, "content").await.0.as_secs_f64());
            let body = json!({"inputs": format!("s{i}"), "stream": true});
            ours.push(
                stream_timing(&client, &format!("{base}/v1/conversations/{id}"), &body, "message.output.delta")
                    .await
                    .0
                    .as_secs_f64(),
            );
        }
        let floor50 = percentile(&mut floor, 0.5);
        ttfd.push(percentile(&mut ours, 0.5) - floor50);
        floor_ttfd.push(floor50);
    }
    let (ttfd, floor_ttfd) = (median(ttfd), median(floor_ttfd));
    rows.push(row("time-to-first-delta overhead, p50", ms(ttfd), ms(floor_ttfd), "≤ 1 ms", Some(ttfd <= 0.001)));

    // History length: append overhead with ~1,000 entries of history against ~10.
    let long: Vec<String> = futures::future::join_all((0..3).map(|_| new_conversation(&client, &base, 500))).await;
    let short: Vec<String> = futures::future::join_all((0..3).map(|_| new_conversation(&client, &base, 5))).await;
    let measure = |ids: Vec<String>| {
        let client = client.clone();
        let base = base.clone();
        let chat_url = chat_url.clone();
        async move {
            let mut overheads = Vec::new();
            for _ in 0..runs {
                let (mut ours, mut floor) = (Vec::new(), Vec::new());
                for i in 0..30 {
                    let id = &ids[i % ids.len()];
                    let input = format!("h{i}");
                    let messages = upstream_messages(&client, &base, id, &input).await;
                    let started = Instant::now();
                    let _ = stream_timing(
                        &client,
                        &chat_url,
                        &json!({"model": "bench", "messages": messages, "stream": true}),
                        "data:",
                    )
                    .await;
                    floor.push(started.elapsed().as_secs_f64());
                    let started = Instant::now();
                    post_json(&client, &format!("{base}/v1/conversations/{id}"), &json!({"inputs": input})).await;
                    ours.push(started.elapsed().as_secs_f64());
                }
                overheads.push(percentile(&mut ours, 0.5) - percentile(&mut floor, 0.5));
            }
            median(overheads)
        }
    };
    let long_overhead = measure(long).await;
    let short_overhead = measure(short).await;
    let ratio = long_overhead / short_overhead.max(1e-6);
    rows.push(row(
        "append overhead, 1,000 vs 10 entries",
        format!("{} vs {} ({ratio:.1}×)", ms(long_overhead), ms(short_overhead)),
        "-".into(),
        "≤ 3×",
        Some(ratio <= 3.0),
    ));
    drop(palaver);

    // Open streams: many concurrent streaming starts held open by a slow upstream.
    let db = fresh_database(name, database_url, dir.path()).await;
    let palaver = spawn_palaver(&db, upstream_url, true, dir.path()).await;
    let pid = palaver.child.id();
    let base = palaver.base.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = memory_kib(pid, "VmRSS:");
    upstream.hold.store(true, Ordering::SeqCst);
    upstream.held.store(0, Ordering::SeqCst);
    let opened = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let url = format!("{base}/v1/conversations");
        let opened = opened.clone();
        let errors = errors.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            // Each stream has a connection of its own, as separate SDK clients would.
            let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
            let permit = gate.acquire_owned().await.unwrap();
            let response = client
                .post(url)
                .json(&json!({"model": "bench", "inputs": format!("stream {i}"), "stream": true}))
                .send()
                .await;
            let response = match response {
                Ok(response) => response,
                Err(error) => {
                    if errors.fetch_add(1, Ordering::SeqCst) < 3 {
                        eprintln!("stream {i}: request failed: {error}");
                    }
                    return;
                }
            };
            let mut body = response.bytes_stream();
            let mut text = String::new();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else {
                    errors.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                text.push_str(&String::from_utf8_lossy(&chunk));
                if text.contains("message.output.delta") {
                    opened.fetch_add(1, Ordering::SeqCst);
                    drop(permit);
                    break;
                }
            }
            while let Some(chunk) = body.next().await {
                if chunk.is_err() {
                    errors.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            }
            if !text.contains("conversation.response.done") && errors.fetch_add(1, Ordering::SeqCst) < 3 {
                let tail: String = text.chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
                eprintln!("stream {i}: ended without done: …{tail}");
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while opened.load(Ordering::SeqCst) + errors.load(Ordering::SeqCst) < streams && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_now = opened.load(Ordering::SeqCst);
    let peak = memory_kib(pid, "VmRSS:");
    upstream.hold.store(false, Ordering::SeqCst);
    upstream.release.notify_waiters();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    }
    let stream_errors = errors.load(Ordering::SeqCst);
    let per_stream = (peak.saturating_sub(before)) as f64 / open_now.max(1) as f64;
    rows.push(row(
        &format!("RSS per open stream ({open_now} open)"),
        format!("{per_stream:.1} KiB ({} errors)", stream_errors),
        "-".into(),
        "≤ 50 KiB, no errors",
        Some(per_stream <= 50.0 && stream_errors == 0 && open_now == streams),
    ));
    drop(palaver);
    rows
}

// ---------------------------------------------------------------------------------------
// Outside mode: what a client sees. The fake upstream runs as a process of its own and the
// load comes from another process over loopback, as an outside load generator (wrk) would
// drive it; the bench process only starts them and reads their reports. Workload: 5-turn
// conversations, each turn one request; the floor is the same requests straight to the
// upstream (the chat completion a stateless client would send, its history growing).

/// A child process of this bench binary in another role (`BENCH_ROLE`).
struct Role {
    child: Child,
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn role(name: &str, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env("BENCH_ROLE", name).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command
}

/// Starts the fake upstream as its own process and returns it with its base URL.
/// `cost_us`: CPU microseconds it spends on each answer, on one thread (`BENCH_UPSTREAM_CPU_US`).
fn spawn_upstream_process(cost_us: Option<u64>) -> (Role, String) {
    use std::io::BufRead;
    let env: Vec<(&str, String)> = cost_us.map(|us| ("BENCH_UPSTREAM_CPU_US", us.to_string())).into_iter().collect();
    let mut child = role("upstream", &env).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    (Role { child }, line.trim().to_owned())
}

/// `BENCH_ROLE=upstream`: serve the fake upstream until killed.
/// With `BENCH_UPSTREAM_CPU_US`, it serves on one thread, as a single-process model server
/// (a Python one, say) does, and spends that CPU on each answer.
fn run_upstream_role() {
    let cost = std::env::var("BENCH_UPSTREAM_CPU_US").ok().map(|us| Duration::from_micros(us.parse().unwrap()));
    let runtime = match cost {
        Some(_) => tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap(),
    };
    runtime.block_on(async {
        let (url, _) = start_upstream(cost).await;
        println!("{url}");
        std::future::pending::<()>().await;
    });
}

/// What one load run measured.
#[derive(serde::Serialize, serde::Deserialize)]
struct LoadReport {
    /// Seconds per request (per turn), or to the first delta when streaming.
    latencies: Vec<f64>,
    requests: usize,
    elapsed: f64,
}

/// Runs the load process: `target` is `palaver` or `floor`, at `concurrency`, until
/// `requests` turns are done; `stream` measures the time to the first delta instead.
fn run_load(target: &str, url: &str, concurrency: usize, requests: usize, stream: bool) -> LoadReport {
    let output = role(
        "load",
        &[
            ("BENCH_LOAD_TARGET", target.to_owned()),
            ("BENCH_LOAD_URL", url.to_owned()),
            ("BENCH_LOAD_CONCURRENCY", concurrency.to_string()),
            ("BENCH_LOAD_REQUESTS", requests.to_string()),
            ("BENCH_LOAD_STREAM", stream.to_string()),
        ],
    )
    .stderr(Stdio::inherit())
    .output()
    .unwrap();
    assert!(output.status.success(), "the load process failed");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `BENCH_ROLE=load`: one thread, as a load generator's event loop; every worker keeps its
/// own connection and runs 5-turn conversations until the shared request budget is spent.
/// Bare HTTP/1.1 connections (hyper's, no client pool or JSON values) and byte searches in
/// the answers: the generator's own CPU competes with palaver for the cores, so it has to
/// cost about what wrk does, or the floor it measures is too low and the ratios flatter.
fn run_load_role() {
    let var = |name: &str| std::env::var(name).unwrap();
    let (target, url) = (var("BENCH_LOAD_TARGET"), var("BENCH_LOAD_URL"));
    let concurrency: usize = var("BENCH_LOAD_CONCURRENCY").parse().unwrap();
    let requests: usize = var("BENCH_LOAD_REQUESTS").parse().unwrap();
    let stream = var("BENCH_LOAD_STREAM") == "true";
    let floor = target == "floor";
    // `http://host:port/prefix`: the upstream's base URL carries a path.
    let address = url.strip_prefix("http://").unwrap().trim_end_matches('/');
    let (host, prefix) = match address.split_once('/') {
        Some((host, path)) => (host.to_owned(), format!("/{path}")),
        None => (address.to_owned(), String::new()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let report = runtime.block_on(async {
        let budget = Arc::new(AtomicUsize::new(requests));
        let started = Instant::now();
        let workers = (0..concurrency).map(|_| {
            let (budget, host, prefix) = (budget.clone(), host.clone(), prefix.clone());
            async move {
                use http_body_util::BodyExt;
                let socket = tokio::net::TcpStream::connect(&host).await.unwrap();
                socket.set_nodelay(true).unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(socket)).await.unwrap();
                tokio::spawn(connection);
                let mut latencies = Vec::new();
                'conversations: loop {
                    let mut conversation: Option<String> = None;
                    let mut messages: Vec<String> = Vec::new();
                    for turn in 0..5 {
                        if budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() {
                            break 'conversations;
                        }
                        let input = format!("\"Question {turn}: how far is the moon?\"");
                        let (path, body) = if floor {
                            messages.push(format!("{{\"role\":\"user\",\"content\":{input}}}"));
                            let messages = messages.join(",");
                            let body = format!("{{\"model\":\"bench\",\"messages\":[{messages}],\"stream\":{stream}}}");
                            (format!("{prefix}/chat/completions"), body)
                        } else {
                            match &conversation {
                                None => (
                                    format!("{prefix}/v1/conversations"),
                                    format!("{{\"model\":\"bench\",\"inputs\":{input},\"stream\":{stream}}}"),
                                ),
                                Some(id) => (
                                    format!("{prefix}/v1/conversations/{id}"),
                                    format!("{{\"inputs\":{input},\"stream\":{stream}}}"),
                                ),
                            }
                        };
                        let request = hyper::Request::post(&path)
                            .header("host", &host)
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(Bytes::from(body)))
                            .unwrap();
                        let started = Instant::now();
                        let response = sender.send_request(request).await.unwrap();
                        assert!(response.status().is_success(), "{path}: {}", response.status());
                        let mut body = response.into_body();
                        let marker: &[u8] = if floor { b"content" } else { b"message.output.delta" };
                        let (mut first, mut seen) = (None, Vec::new());
                        while let Some(frame) = body.frame().await {
                            let Ok(data) = frame.unwrap().into_data() else { continue };
                            if (!floor && conversation.is_none()) || (stream && first.is_none()) {
                                seen.extend_from_slice(&data);
                            }
                            if stream && first.is_none() && seen.windows(marker.len()).any(|w| w == marker) {
                                first = Some(started.elapsed());
                            }
                        }
                        let end = started.elapsed();
                        latencies.push(first.unwrap_or(end).as_secs_f64());
                        if floor {
                            messages.push(r#"{"role":"assistant","content":"Hello from the bench."}"#.to_owned());
                        } else if conversation.is_none() {
                            conversation = Some(conversation_id(&seen).expect("the start's conversation id"));
                        }
                    }
                }
                latencies
            }
        });
        let latencies: Vec<f64> = futures::future::join_all(workers).await.into_iter().flatten().collect();
        LoadReport { requests: latencies.len(), latencies, elapsed: started.elapsed().as_secs_f64() }
    });
    println!("{}", serde_json::to_string(&report).unwrap());
}

/// The conversation id in the first event of a streamed start.
fn conversation_id(seen: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(seen).ok()?;
    let needle = "\"conversation_id\":\"";
    let at = text.find(needle)? + needle.len();
    let end = text[at..].find('"')?;
    Some(text[at..at + end].to_owned())
}

/// palaver and its upstream as processes, loaded from a third: each figure measured
/// through palaver and, as its floor, straight at the upstream.
struct Outside {
    base: String,
    upstream_url: String,
    pid: u32,
}

impl Outside {
    /// One load run, with palaver's CPU seconds over it.
    async fn load(&self, target: &'static str, concurrency: usize, requests: usize, stream: bool) -> (LoadReport, f64) {
        let url = if target == "floor" { self.upstream_url.clone() } else { self.base.clone() };
        let cpu_before = cpu_seconds(self.pid);
        let report =
            tokio::task::spawn_blocking(move || run_load(target, &url, concurrency, requests, stream)).await.unwrap();
        (report, cpu_seconds(self.pid) - cpu_before)
    }

    /// Warms both (connections, caches, the SQLite file) before measuring.
    async fn warm(&self) {
        self.load("palaver", 4, 200, false).await;
        self.load("floor", 4, 200, false).await;
    }

    /// Medians of (added p50, the floor's p50, added p99) per stored turn at concurrency 1,
    /// floor and palaver runs alternating; with `stream`, to the first delta.
    async fn added_latency(&self, runs: usize, requests: usize, stream: bool) -> (f64, f64, f64) {
        let (mut added, mut floors, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let (mut floor, _) = self.load("floor", 1, requests, stream).await;
            let (mut ours, _) = self.load("palaver", 1, requests, stream).await;
            let floor50 = percentile(&mut floor.latencies, 0.5);
            added.push(percentile(&mut ours.latencies, 0.5) - floor50);
            p99s.push(percentile(&mut ours.latencies, 0.99) - percentile(&mut floor.latencies, 0.99));
            floors.push(floor50);
        }
        (median(added), median(floors), median(p99s))
    }

    /// Throughput at concurrency 32, and palaver's CPU per turn: medians of (ratio to the
    /// floor, turns/s, the floor's requests/s, CPU seconds per turn).
    async fn throughput(&self, runs: usize, requests: usize, stream: bool) -> (f64, f64, f64, f64) {
        let (mut ratios, mut rates, mut floor_rates, mut cpus) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let (floor, _) = self.load("floor", 32, requests, stream).await;
            let (ours, cpu) = self.load("palaver", 32, requests, stream).await;
            let (rate, floor_rate) = (ours.requests as f64 / ours.elapsed, floor.requests as f64 / floor.elapsed);
            ratios.push(rate / floor_rate);
            rates.push(rate);
            floor_rates.push(floor_rate);
            cpus.push(cpu / ours.requests as f64);
        }
        (median(ratios), median(rates), median(floor_rates), median(cpus))
    }
}

/// CPU the second, model-like upstream spends on each answer: about the ~0.25 ms an
/// outside run's upstream took to answer at concurrency 1 on a machine like this one.
const MODEL_LIKE_UPSTREAM_CPU_US: u64 = 200;

async fn bench_outside(name: &str, database_url: &str, runs: usize) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, upstream_url) = spawn_upstream_process(None);
    let db = fresh_database(name, database_url, dir.path()).await;
    let palaver = spawn_palaver(&db, &upstream_url, false, dir.path()).await;
    let outside = Outside { base: palaver.base.clone(), upstream_url, pid: palaver.child.id() };
    let mut rows = Vec::new();
    outside.warm().await;

    let (added, floor, p99) = outside.added_latency(runs, 500, false).await;
    let ratio = added / floor;
    rows.push(row(
        "added latency per stored turn, p50 (c=1)",
        format!("{} ({ratio:.2}× floor)", ms(added)),
        ms(floor),
        "≤ 1× floor",
        Some(ratio <= 1.0),
    ));
    rows.push(row("added latency per stored turn, p99 (c=1)", ms(p99), "-".into(), "-", None));
    if let Some(commit) = database_commit_p50(&db).await {
        let share = format!("{} ({:.0}% of the added latency)", ms(commit), commit / added * 100.0);
        rows.push(row("the database's one-row commit, p50 (c=1)", share, "-".into(), "-", None));
    }

    // Streamed, 1,200 conversations: more than the run logs kept for resuming.
    for (stream, turn, target) in [(false, "turn", Some(0.35)), (true, "streamed turn", None)] {
        let (ratio, rate, floor_rate, cpu) = outside.throughput(runs, 6000, stream).await;
        let label = if stream { "streamed throughput (c=32)" } else { "throughput (c=32)" };
        rows.push(row(
            label,
            format!("{rate:.0} turns/s ({:.0}% of floor)", ratio * 100.0),
            format!("{floor_rate:.0} req/s"),
            if target.is_some() { "≥ 35% of floor" } else { "-" },
            target.map(|least| ratio >= least),
        ));
        rows.push(row(
            &format!("palaver CPU per {turn} (c=32)"),
            format!("{:.0} µs", cpu * 1e6),
            "-".into(),
            "-",
            None,
        ));
    }

    // Time to the first delta of a streamed turn, concurrency 1.
    let (overhead, floor, _) = outside.added_latency(runs, 300, true).await;
    rows.push(row("time-to-first-delta overhead, p50", ms(overhead), ms(floor), "≤ 0.3 ms", Some(overhead <= 0.0003)));
    drop(palaver);

    // The same two ratios against an upstream that does some work per answer, as any
    // model server does: the floor is then no longer a fraction of palaver's own cost.
    let (_model_like, model_like_url) = spawn_upstream_process(Some(MODEL_LIKE_UPSTREAM_CPU_US));
    let palaver = spawn_palaver(&db, &model_like_url, false, dir.path()).await;
    let outside = Outside { base: palaver.base.clone(), upstream_url: model_like_url, pid: palaver.child.id() };
    outside.warm().await;
    let model_like = format!("upstream spending {MODEL_LIKE_UPSTREAM_CPU_US} µs CPU per answer");
    let (added, floor, _) = outside.added_latency(runs, 500, false).await;
    let ratio = added / floor;
    rows.push(row(
        &format!("{model_like}: added latency per stored turn, p50 (c=1)"),
        format!("{} ({ratio:.2}× floor)", ms(added)),
        ms(floor),
        "≤ 1× floor",
        Some(ratio <= 1.0),
    ));
    let (ratio, rate, floor_rate, _) = outside.throughput(runs, 3000, false).await;
    rows.push(row(
        &format!("{model_like}: throughput (c=32)"),
        format!("{rate:.0} turns/s ({:.0}% of floor)", ratio * 100.0),
        format!("{floor_rate:.0} req/s"),
        "≥ 35% of floor",
        Some(ratio >= 0.35),
    ));
    drop(palaver);
    rows
}

async fn fresh_database(backend: &str, admin_url: &str, dir: &std::path::Path) -> String {
    if backend == "sqlite" {
        return format!("sqlite://{}", dir.join(format!("bench-{}.db", free_port())).display());
    }
    use sqlx::Connection;
    let name = format!("palaver_t_bench_{}", free_port());
    let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("Postgres for the bench");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    CREATED_DATABASES.lock().unwrap().push(name.clone());
    // libpq's `options` parameter, which sqlx passes on at connect time.
    let options = if backend == "postgres-async" { "?options=-c%20synchronous_commit%3Doff" } else { "" };
    format!("{}/{name}{options}", admin_url.rsplit_once('/').unwrap().0)
}

/// The database's own price for a commit: one-row INSERT transactions at concurrency 1,
/// median seconds, on a table of their own in palaver's database (`None` for SQLite, whose
/// commits palaver makes in-process).
async fn database_commit_p50(database_url: &str) -> Option<f64> {
    use sqlx::Connection;
    if database_url.starts_with("sqlite:") {
        return None;
    }
    let mut conn = sqlx::PgConnection::connect(database_url).await.expect("Postgres for the bench");
    sqlx::query("CREATE TABLE bench_commits (id bigserial PRIMARY KEY, body text NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut latencies = Vec::with_capacity(500);
    for _ in 0..500 {
        let started = Instant::now();
        sqlx::query("INSERT INTO bench_commits (body) VALUES ('a turn')").execute(&mut conn).await.unwrap();
        latencies.push(started.elapsed().as_secs_f64());
    }
    Some(median(latencies))
}

/// The Postgres databases this run created, dropped at its end.
static CREATED_DATABASES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

async fn drop_created_databases(admin_url: &str) {
    use sqlx::Connection;
    let names = std::mem::take(&mut *CREATED_DATABASES.lock().unwrap());
    if names.is_empty() {
        return;
    }
    let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("Postgres for the bench");
    for name in names {
        if let Err(error) =
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await
        {
            eprintln!("the bench database {name} could not be dropped: {error}");
        }
    }
}

fn main() {
    match std::env::var("BENCH_ROLE").as_deref() {
        Ok("upstream") => return run_upstream_role(),
        Ok("load") => return run_load_role(),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres,postgres-async".into());
        let postgres =
            std::env::var("BENCH_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
        let streams: usize = std::env::var("BENCH_STREAMS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let modes = std::env::var("BENCH_MODES").unwrap_or_else(|_| "outside,inside".into());
        let (upstream_url, upstream) = start_upstream(None).await;
        for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let mut report = Vec::new();
            for backend in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
                eprintln!("benchmarking {backend} ({mode}) …");
                let rows = match mode {
                    "outside" => bench_outside(backend, &postgres, runs).await,
                    "inside" => bench_backend(backend, &postgres, &upstream_url, &upstream, runs, streams).await,
                    other => panic!("BENCH_MODES: unknown mode `{other}` (outside, inside)"),
                };
                report.push((backend.to_owned(), rows));
            }
            println!();
            match mode {
                "outside" => println!(
                    "palaver benchmark, outside — the fake upstream and the load generator are processes of their \
                     own; 5-turn conversations; floor = the same requests straight to the upstream; medians of {runs} runs"
                ),
                _ => println!(
                    "palaver benchmark, inside — the fake upstream and the client in the bench process; floor = the \
                     same request straight to the fake upstream; medians of {runs} runs"
                ),
            }
            println!();
            println!("| backend | figure | palaver | floor | budget | met |");
            println!("|---|---|---|---|---|---|");
            for (backend, rows) in &report {
                for r in rows {
                    let met = match r.met {
                        Some(true) => "yes",
                        Some(false) => "**no**",
                        None => "-",
                    };
                    println!("| {backend} | {} | {} | {} | {} | {met} |", r.figure, r.value, r.floor, r.budget);
                }
            }
        }
        drop_created_databases(&postgres).await;
        println!();
        println!("total bench time: {:.0} s", started.elapsed().as_secs_f64());
    });
}
