//! The native `code_interpreter`'s sandbox (DESIGN decision 7): runs model-written Python in a
//! work directory kept per conversation branch, confined by one of
//!
//! - `landlock`: palaver re-executes itself as `palaver sandbox-exec` (see `helper`), which
//!   drops root, sets resource limits, restricts itself with Landlock and seccomp, and
//!   `exec`s `python3 -I`;
//! - `bwrap`: the same helper (limits, no root) `exec`s bubblewrap, whose namespaces confine
//!   the interpreter;
//! - `command`: the operator's own program, which gets the code on stdin (see `command`).
//!
//! Whatever the mechanism, a run is one process group that is killed when the run ends, and
//! hitting a limit is an answer for the model (`Execution::limit`), not an error.

mod bwrap;
mod command;
pub mod helper;
mod landlock_rules;
mod process;
mod seccomp;
mod workdir;

use crate::config::{CodeInterpreterConfig, SandboxMode};
use anyhow::Context;
use bytes::Bytes;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use helper::HelperArgs;
pub use workdir::PRIVATE_DIR;

/// The notebook-style runner the interpreter is started with (`python3 -I -u -c WRAPPER`).
pub const WRAPPER: &str = include_str!("wrapper.py");

/// Read-only trees and files the interpreter needs from the system; `/etc` only by the
/// files that hold nothing secret (`/etc/passwd` stays unreadable).
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    // Debian resolves the BLAS numpy loads through these symlinks.
    "/etc/alternatives",
    "/etc/matplotlibrc",
    "/etc/fonts",
    "/etc/mime.types",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
    "/proc/self",
];
const SYSTEM_WRITE: &[&str] = &["/dev/null"];

/// Exit status of `palaver sandbox-exec` when it could not confine or start the program.
const HELPER_FAILED: i32 = 125;

/// A limit the run hit; the run still answers, with what it printed until then. As JSON
/// (`"file_size"`, …) in the answer of a `command` sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitHit {
    /// The wall clock (`timeout_secs`).
    Timeout,
    /// CPU time (`cpu_secs`).
    Cpu,
    /// Address space (`memory_mb`): a `MemoryError`.
    Memory,
    /// Output past `max_output_bytes` was dropped.
    Output,
    /// No more processes or threads (`max_processes`).
    Processes,
    /// A file would have grown past `max_file_mb`.
    FileSize,
}

impl LimitHit {
    /// A sentence for the model.
    pub fn describe(self) -> &'static str {
        match self {
            LimitHit::Timeout => "The code ran out of time and was stopped.",
            LimitHit::Cpu => "The code used up its CPU time and was stopped.",
            LimitHit::Memory => "The code ran out of memory.",
            LimitHit::Output => "The output was too long and was cut.",
            LimitHit::Processes => "The code could not start more processes or threads.",
            LimitHit::FileSize => "The code tried to write a file larger than allowed.",
        }
    }
}

/// A file a run created or changed in its work directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducedBytes {
    /// The path relative to the work directory (`plot.png`, `out/data.csv`).
    pub name: String,
    pub bytes: Bytes,
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// stdout and stderr as they interleaved, then the final expression's `repr`; tracebacks
    /// included.
    pub output: String,
    /// Output past `max_output_bytes` was dropped.
    pub truncated: bool,
    pub limit: Option<LimitHit>,
    /// `None` when a signal (or the wall clock) ended the run.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub files: Vec<ProducedBytes>,
    /// Files the run changed that are not handed back (too large, or too many).
    pub skipped_files: Vec<String>,
}

impl Execution {
    /// Whether the code failed (an exception, a limit, a non-zero exit).
    pub fn is_error(&self) -> bool {
        self.exit_code != Some(0) || self.limit.is_some_and(|l| l != LimitHit::Output)
    }

    /// The text the model reads: the output, then what stopped the run, if anything.
    pub fn report(&self) -> String {
        let mut text = self.output.clone();
        let mut note = |line: &str| {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line);
        };
        if self.truncated && self.limit != Some(LimitHit::Output) {
            note(LimitHit::Output.describe());
        }
        if let Some(limit) = self.limit {
            note(limit.describe());
        }
        if !self.skipped_files.is_empty() {
            note(&format!("Files not returned (too large or too many): {}.", self.skipped_files.join(", ")));
        }
        text
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sandbox itself failed (not the code it ran).
    #[error("The sandbox could not run the code: {0}")]
    Sandbox(String),
    #[error("The sandbox failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What start-up found: a sandbox to offer the tool with, or why the tool is not offered.
pub enum SandboxChoice {
    Available(Arc<Sandbox>),
    Unavailable { reason: String },
}

/// The interpreter as resolved at start.
#[derive(Debug, Clone)]
struct Interpreter {
    executable: PathBuf,
    /// `sys.prefix` and friends: a virtualenv's and the base installation's.
    prefixes: Vec<PathBuf>,
}

enum Mechanism {
    Landlock { helper: PathBuf, python: Interpreter },
    Bwrap { helper: PathBuf, bwrap: PathBuf, python: Interpreter },
    Command { argv: Vec<String> },
}

#[derive(Debug, Clone)]
struct Limits {
    timeout: Duration,
    cpu_secs: u64,
    memory_mb: u64,
    max_processes: u64,
    max_output_bytes: usize,
    max_file_mb: u64,
    max_open_files: u64,
}

pub struct Sandbox {
    mechanism: Mechanism,
    limits: Limits,
    workdirs: workdir::Workdirs,
    permits: tokio::sync::Semaphore,
    description: String,
}

impl Sandbox {
    /// Chooses and checks the sandbox `config` asks for, with this very executable as the
    /// helper. An explicit mechanism that cannot work here is an error; `auto` falls back
    /// to `Unavailable`.
    pub fn from_config(config: &CodeInterpreterConfig) -> anyhow::Result<SandboxChoice> {
        let helper = match &config.helper {
            Some(helper) => helper.clone(),
            None => std::env::current_exe().context("locating the palaver executable")?,
        };
        Sandbox::from_config_with_helper(config, &helper)
    }

    /// As `from_config`, with `helper` as the `palaver` executable (tests run from another
    /// binary).
    pub fn from_config_with_helper(config: &CodeInterpreterConfig, helper: &Path) -> anyhow::Result<SandboxChoice> {
        let limits = Limits {
            timeout: Duration::from_secs(config.timeout_secs),
            cpu_secs: config.cpu_secs.unwrap_or(config.timeout_secs),
            memory_mb: config.memory_mb,
            max_processes: config.max_processes,
            max_output_bytes: config.max_output_bytes,
            max_file_mb: config.max_file_mb,
            max_open_files: config.max_open_files,
        };
        anyhow::ensure!(config.concurrency > 0, "[code_interpreter] concurrency must be at least 1");
        let root = config.workdir_root.clone().unwrap_or_else(|| std::env::temp_dir().join("palaver-sandbox"));
        let runs_as_nobody = nix::unistd::Uid::effective().is_root();
        let owner = |confined: bool| (confined && runs_as_nobody).then_some(helper::NOBODY);
        let ttl = Duration::from_secs(config.workdir_ttl_secs);
        let build = |mechanism: Mechanism, description: String| -> anyhow::Result<SandboxChoice> {
            let confined = !matches!(mechanism, Mechanism::Command { .. });
            let workdirs = workdir::Workdirs::new(root.clone(), ttl, owner(confined))
                .with_context(|| format!("creating the sandbox work directory root {}", root.display()))?;
            Ok(SandboxChoice::Available(Arc::new(Sandbox {
                mechanism,
                limits: limits.clone(),
                workdirs,
                permits: tokio::sync::Semaphore::new(config.concurrency),
                description,
            })))
        };
        let probe_dir = || -> anyhow::Result<tempfile_dir::ProbeDir> {
            tempfile_dir::ProbeDir::create(&root, owner(true))
                .with_context(|| format!("creating a probe directory under {}", root.display()))
        };
        match config.sandbox {
            SandboxMode::Off => Ok(SandboxChoice::Unavailable { reason: "`sandbox = \"off\"`".to_owned() }),
            SandboxMode::Command => {
                anyhow::ensure!(
                    !config.command.is_empty(),
                    "[code_interpreter] sandbox = \"command\" needs `command`, the program to run"
                );
                let description = format!("the operator's command `{}`", config.command.join(" "));
                build(Mechanism::Command { argv: config.command.clone() }, description)
            }
            SandboxMode::Landlock => {
                let python = resolve_python(&config.python)?;
                let description = probe_landlock(helper, &python, &limits, &probe_dir()?)?;
                build(Mechanism::Landlock { helper: helper.to_owned(), python }, description)
            }
            SandboxMode::Bwrap => {
                let python = resolve_python(&config.python)?;
                let bwrap = which("bwrap").context("bubblewrap (`bwrap`) is not on PATH")?;
                let description = probe_bwrap(helper, &bwrap, &python, &limits, &probe_dir()?)?;
                build(Mechanism::Bwrap { helper: helper.to_owned(), bwrap, python }, description)
            }
            SandboxMode::Auto => {
                let python = match resolve_python(&config.python) {
                    Ok(python) => python,
                    Err(error) => return Ok(SandboxChoice::Unavailable { reason: format!("{error:#}") }),
                };
                let landlock_error = match probe_landlock(helper, &python, &limits, &probe_dir()?) {
                    Ok(description) => {
                        return build(Mechanism::Landlock { helper: helper.to_owned(), python }, description)
                    }
                    Err(error) => error,
                };
                let bwrap_error = match which("bwrap") {
                    Some(bwrap) => match probe_bwrap(helper, &bwrap, &python, &limits, &probe_dir()?) {
                        Ok(description) => {
                            return build(Mechanism::Bwrap { helper: helper.to_owned(), bwrap, python }, description)
                        }
                        Err(error) => format!("{error:#}"),
                    },
                    None => "bubblewrap (`bwrap`) is not on PATH".to_owned(),
                };
                Ok(SandboxChoice::Unavailable {
                    reason: format!("Landlock: {landlock_error:#}; bubblewrap: {bwrap_error}"),
                })
            }
        }
    }

    /// What confines the code, for the start-up log.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Runs `code` in the work directory of `workdir_key` (created on first use, kept for
    /// later runs with the same key). Waits for a free slot first (`concurrency`).
    pub async fn run(&self, workdir_key: &str, code: &str) -> Result<Execution, Error> {
        let _permit = self.permits.acquire().await.map_err(|e| Error::Sandbox(e.to_string()))?;
        let held = self.workdirs.hold(workdir_key).await?;
        let dir = held.path.clone();
        let before = blocking(move || workdir::snapshot(&dir)).await?;
        let (command, merge_stderr, max_output) = match &self.mechanism {
            Mechanism::Landlock { helper, python } => {
                (landlock_command(&self.limits, helper, python, &held.path), true, self.limits.max_output_bytes)
            }
            Mechanism::Bwrap { helper, bwrap, python } => {
                (bwrap_command(&self.limits, helper, bwrap, python, &held.path), true, self.limits.max_output_bytes)
            }
            Mechanism::Command { argv } => {
                (command::command(argv, &held.path), false, command::max_answer_bytes(self.limits.max_output_bytes))
            }
        };
        let finished =
            process::run(command, code.as_bytes().to_vec(), merge_stderr, max_output, self.limits.timeout).await?;
        let max_file_bytes = self.limits.max_file_mb * 1024 * 1024;
        let dir = held.path.clone();
        let (files, skipped) = blocking(move || workdir::produced(&dir, &before, max_file_bytes)).await?;
        let mut execution = match &self.mechanism {
            Mechanism::Command { .. } => {
                let answer = command::parse_answer(&finished)?;
                let (output, truncated) = cap_text(&answer.output, self.limits.max_output_bytes);
                let limit = answer.limit.or(finished.timed_out.then_some(LimitHit::Timeout));
                Execution {
                    output,
                    truncated: truncated || answer.truncated,
                    limit,
                    exit_code: answer.exit_code.or(finished.status.and_then(|s| s.code())),
                    signal: finished.status.and_then(|s| s.signal()),
                    files: Vec::new(),
                    skipped_files: Vec::new(),
                }
            }
            _ => interpret(&finished)?,
        };
        if execution.truncated && execution.limit.is_none() {
            execution.limit = Some(LimitHit::Output);
        }
        execution.files = files;
        execution.skipped_files = skipped;
        Ok(execution)
    }

    /// Removes the work directories unused for `workdir_ttl_secs`; returns how many.
    pub async fn remove_expired_workdirs(self: &Arc<Self>) -> usize {
        let sandbox = self.clone();
        tokio::task::spawn_blocking(move || sandbox.workdirs.remove_expired()).await.unwrap_or(0)
    }

    /// Removes expired work directories now and then, until the returned task is aborted.
    pub fn spawn_cleanup(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let sandbox = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            loop {
                interval.tick().await;
                let removed = sandbox.remove_expired_workdirs().await;
                if removed > 0 {
                    tracing::info!(removed, "expired sandbox work directories removed");
                }
            }
        })
    }
}

fn helper_command(limits: &Limits, helper: &Path, workdir: &Path, landlock: bool) -> std::process::Command {
    let mut command = std::process::Command::new(helper);
    command.arg("sandbox-exec").arg("--workdir").arg(workdir);
    if landlock {
        command.arg("--landlock");
    }
    command
        .arg(format!("--cpu-secs={}", limits.cpu_secs))
        .arg(format!("--memory-mb={}", limits.memory_mb))
        .arg(format!("--max-processes={}", limits.max_processes))
        .arg(format!("--max-file-mb={}", limits.max_file_mb))
        .arg(format!("--max-open-files={}", limits.max_open_files))
        .env_clear()
        .current_dir(workdir);
    command
}

fn landlock_command(limits: &Limits, helper: &Path, python: &Interpreter, workdir: &Path) -> std::process::Command {
    let mut command = helper_command(limits, helper, workdir, true);
    for path in read_paths(python) {
        command.arg("--read").arg(path);
    }
    for path in SYSTEM_WRITE {
        command.arg("--write").arg(path);
    }
    for pair in interpreter_env(workdir) {
        command.arg(format!("--env={pair}"));
    }
    command.arg("--").arg(&python.executable).args(["-I", "-u", "-c", WRAPPER]);
    command
}

fn bwrap_command(
    limits: &Limits,
    helper: &Path,
    bwrap: &Path,
    python: &Interpreter,
    workdir: &Path,
) -> std::process::Command {
    let mut command = helper_command(limits, helper, workdir, false);
    // bwrap passes its own environment on: the helper's `--env` is the interpreter's.
    for pair in interpreter_env(Path::new(bwrap::WORKDIR_INSIDE)) {
        command.arg(format!("--env={pair}"));
    }
    command.arg("--").arg(bwrap).args(bwrap::arguments(&read_paths(python), workdir));
    command.arg(&python.executable).args(["-I", "-u", "-c", WRAPPER]);
    command
}

/// The interpreter's whole environment: no variable of palaver's (keys, URLs) gets in.
fn interpreter_env(workdir: &Path) -> Vec<String> {
    let private = workdir.join(PRIVATE_DIR);
    vec![
        format!("HOME={}", workdir.display()),
        format!("TMPDIR={}", private.join("tmp").display()),
        format!("MPLCONFIGDIR={}", private.join("matplotlib").display()),
        // fontconfig's cache (matplotlib's text rendering) stays out of the produced files.
        format!("XDG_CACHE_HOME={}", private.join("cache").display()),
        "MPLBACKEND=Agg".to_owned(),
        "LANG=C.UTF-8".to_owned(),
        "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
        // BLAS and OpenMP start a thread per core otherwise, which `max_processes` counts.
        "OPENBLAS_NUM_THREADS=1".to_owned(),
        "OMP_NUM_THREADS=1".to_owned(),
        "MKL_NUM_THREADS=1".to_owned(),
    ]
}

/// What the interpreter may read: the system's files it needs, its own installation, and
/// Debian's `/etc/python3*` (`sitecustomize`).
fn read_paths(python: &Interpreter) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
    if let Ok(entries) = std::fs::read_dir("/etc") {
        let mut etc_python: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path())
            .collect();
        etc_python.sort();
        paths.extend(etc_python);
    }
    for prefix in &python.prefixes {
        if !paths.iter().any(|p| prefix.starts_with(p)) {
            paths.push(prefix.clone());
        }
    }
    paths
}

/// The code's outcome from the wrapper's exit status and output.
fn interpret(finished: &process::Finished) -> Result<Execution, Error> {
    let output = String::from_utf8_lossy(&finished.output).into_owned();
    let exit_code = finished.status.and_then(|s| s.code());
    let signal = finished.status.and_then(|s| s.signal());
    if exit_code == Some(HELPER_FAILED) && output.starts_with("sandbox: ") {
        return Err(Error::Sandbox(output.trim_start_matches("sandbox: ").trim_end().to_owned()));
    }
    let limit = if finished.timed_out {
        Some(LimitHit::Timeout)
    } else {
        match (exit_code, signal) {
            (Some(3), _) => Some(LimitHit::Memory),
            (Some(4), _) => Some(LimitHit::FileSize),
            (Some(5), _) => Some(LimitHit::Processes),
            (_, Some(libc::SIGXCPU)) => Some(LimitHit::Cpu),
            (_, Some(libc::SIGXFSZ)) => Some(LimitHit::FileSize),
            _ => None,
        }
    };
    Ok(Execution {
        output,
        truncated: finished.truncated,
        limit,
        exit_code,
        signal,
        files: Vec::new(),
        skipped_files: Vec::new(),
    })
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn cap_text(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_owned(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::Sandbox(e.to_string()))
}

/// `name` on `PATH`, or `name` itself when it is a path.
fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        std::fs::metadata(candidate)
            .is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
    })
}

/// Asks the interpreter (the operator's, before any model code) where it lives, so the
/// sandbox can start it without `PATH` or shims, and let it read its own installation.
fn resolve_python(name: &str) -> anyhow::Result<Interpreter> {
    const ASK: &str = "import json, os, sys; print(json.dumps([sys.executable, sys.prefix, sys.base_prefix, \
                       sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]))";
    let program = which(name).with_context(|| format!("the interpreter `{name}` is not on PATH"))?;
    let output = std::process::Command::new(&program)
        .args(["-I", "-c", ASK])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let answer: Vec<String> = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{} is not a Python 3 interpreter", program.display()))?;
    let (executable, prefixes) = answer.split_first().context("an empty answer from the interpreter")?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for prefix in prefixes.iter().map(PathBuf::from) {
        if !prefix.as_os_str().is_empty() && !dirs.contains(&prefix) {
            dirs.push(prefix);
        }
    }
    Ok(Interpreter { executable: PathBuf::from(executable), prefixes: dirs })
}

/// A throwaway work directory for start-up probes.
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct ProbeDir(pub PathBuf);

    impl ProbeDir {
        pub fn create(root: &Path, owner: Option<u32>) -> std::io::Result<Self> {
            super::workdir::ensure_root(root)?;
            let path = root.join(format!("probe-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir(&path)?;
            if let Some(uid) = owner {
                std::os::unix::fs::lchown(&path, Some(uid), Some(uid))?;
            }
            Ok(ProbeDir(path))
        }
    }

    impl Drop for ProbeDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The code every probe runs: the interpreter starts, and the sandbox holds.
const PROBE_CODE: &str =
    "try:\n    open('/etc/passwd')\nexcept OSError:\n    print('confined')\nelse:\n    print('unconfined')";

fn probe_landlock(
    helper: &Path,
    python: &Interpreter,
    limits: &Limits,
    dir: &tempfile_dir::ProbeDir,
) -> anyhow::Result<String> {
    let mut probe = helper_command(limits, helper, &dir.0, true);
    probe.arg("--probe");
    let report = run_probe(probe)?;
    check_probe_run(landlock_command(limits, helper, python, &dir.0))?;
    Ok(format!("{report}; {}", python.executable.display()))
}

fn probe_bwrap(
    helper: &Path,
    bwrap: &Path,
    python: &Interpreter,
    limits: &Limits,
    dir: &tempfile_dir::ProbeDir,
) -> anyhow::Result<String> {
    check_probe_run(bwrap_command(limits, helper, bwrap, python, &dir.0))?;
    Ok(format!("bubblewrap ({}) and resource limits; {}", bwrap.display(), python.executable.display()))
}

fn run_probe(mut command: std::process::Command) -> anyhow::Result<String> {
    let output = command.stdin(std::process::Stdio::null()).output().context("starting `palaver sandbox-exec`")?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    anyhow::ensure!(output.status.success(), "{}", stderr.trim_start_matches("sandbox: "));
    Ok(stdout)
}

/// Runs the probe code in the sandbox: it must start Python and be refused `/etc/passwd`.
fn check_probe_run(mut command: std::process::Command) -> anyhow::Result<()> {
    let output = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                std::io::Write::write_all(&mut stdin, PROBE_CODE.as_bytes())?;
            }
            child.wait_with_output()
        })
        .context("starting the sandbox")?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    match text.trim() {
        "confined" if output.status.success() => Ok(()),
        "unconfined" => anyhow::bail!("the sandbox let the interpreter read /etc/passwd"),
        other => {
            let hint = if nix::unistd::Uid::effective().is_root() {
                " (palaver runs as root, so the code runs as `nobody`, who must be able to read the interpreter)"
            } else {
                ""
            };
            anyhow::bail!("the sandboxed interpreter did not start: {}{hint}", other.trim_start_matches("sandbox: "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(code: Option<i32>, output: &str) -> process::Finished {
        process::Finished {
            output: output.as_bytes().to_vec(),
            truncated: false,
            timed_out: false,
            status: code.map(|c| std::process::ExitStatus::from_raw(c << 8)),
        }
    }

    #[test]
    fn the_wrappers_exit_codes_name_the_limit() {
        assert_eq!(interpret(&finished(Some(0), "42\n")).unwrap().limit, None);
        assert_eq!(interpret(&finished(Some(3), "MemoryError")).unwrap().limit, Some(LimitHit::Memory));
        assert_eq!(interpret(&finished(Some(4), "")).unwrap().limit, Some(LimitHit::FileSize));
        assert_eq!(interpret(&finished(Some(5), "")).unwrap().limit, Some(LimitHit::Processes));
        let killed =
            process::Finished { status: Some(std::process::ExitStatus::from_raw(libc::SIGXCPU)), ..finished(None, "") };
        assert_eq!(interpret(&killed).unwrap().limit, Some(LimitHit::Cpu));
        let late = process::Finished { timed_out: true, ..finished(None, "") };
        assert_eq!(interpret(&late).unwrap().limit, Some(LimitHit::Timeout));
    }

    #[test]
    fn a_helper_failure_is_an_error_not_an_answer() {
        let error = interpret(&finished(Some(125), "sandbox: applying the Landlock ruleset\n")).unwrap_err();

        assert_eq!(error.to_string(), "The sandbox could not run the code: applying the Landlock ruleset");
        assert!(interpret(&finished(Some(125), "the code's own exit")).is_ok());
    }

    #[test]
    fn the_report_tells_the_model_what_stopped_the_run() {
        let execution = Execution {
            output: "partial".into(),
            truncated: false,
            limit: Some(LimitHit::Timeout),
            exit_code: None,
            signal: Some(9),
            files: vec![],
            skipped_files: vec!["huge.bin".into()],
        };

        assert_eq!(
            execution.report(),
            "partial\nThe code ran out of time and was stopped.\nFiles not returned (too large or too many): huge.bin."
        );
        assert!(execution.is_error());
    }

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(cap_text("héllo", 2), ("h".to_owned(), true));
        assert_eq!(cap_text("hi", 2), ("hi".to_owned(), false));
    }

    #[test]
    fn the_interpreters_prefixes_are_readable_but_not_etc_as_a_whole() {
        let python = Interpreter {
            executable: "/opt/venv/bin/python".into(),
            prefixes: vec!["/opt/venv".into(), "/usr".into(), "/usr/lib/x".into()],
        };

        let paths = read_paths(&python);

        assert!(paths.contains(&PathBuf::from("/opt/venv")));
        assert_eq!(paths.iter().filter(|p| p.starts_with("/usr")).count(), 1);
        assert!(!paths.contains(&PathBuf::from("/etc")));
        assert!(!paths.iter().any(|p| p.starts_with("/etc/passwd")));
    }
}
