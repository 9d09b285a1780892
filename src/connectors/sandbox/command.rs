//! `sandbox = "command"`: the operator's own sandbox program. palaver starts `command` (an
//! argv, no shell) with an empty environment in the call's work directory, as the leader of
//! a process group it kills when the run ends, writes the code to its stdin and closes it,
//! and reads one JSON object from its stdout (stderr goes to palaver's log):
//!
//! ```json
//! {"output": "42\n", "exit_code": 0, "limit": null,
//!  "files": [{"name": "plot.png", "path": "plot.png"}]}
//! ```
//!
//! `output` is required. `exit_code` (the code's), `limit` (`timeout`, `cpu`, `memory`,
//! `output`, `processes`, `file_size`) and `files` (paths absolute or relative to the work
//! directory) are optional; files the program creates or changes in the work directory are
//! handed back without being listed.

use super::{process::Finished, workdir, Error, LimitHit, ProducedBytes};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
struct Answer {
    output: String,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    limit: Option<Limit>,
    #[serde(default)]
    files: Vec<FileRef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Limit {
    Timeout,
    Cpu,
    Memory,
    Output,
    Processes,
    FileSize,
}

#[derive(Debug, Deserialize)]
struct FileRef {
    name: String,
    path: String,
}

/// The command's answer, its listed files read.
#[derive(Debug)]
pub struct Read {
    pub output: String,
    pub truncated: bool,
    pub exit_code: Option<i32>,
    pub limit: Option<LimitHit>,
    pub files: Vec<ProducedBytes>,
    pub skipped: Vec<String>,
}

pub fn command(argv: &[String], workdir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(&argv[0]);
    command.args(&argv[1..]).env_clear().current_dir(workdir);
    command
}

/// The JSON answer may be longer than the output it carries (escapes, file names).
pub fn max_answer_bytes(max_output: usize) -> usize {
    max_output.saturating_mul(2).saturating_add(64 * 1024)
}

pub fn parse_answer(finished: &Finished, workdir: &Path, max_file_bytes: u64) -> Result<Read, Error> {
    if finished.timed_out {
        let output = String::from_utf8_lossy(&finished.output).into_owned();
        return Ok(Read {
            output: serde_json::from_str::<Answer>(&output).map(|a| a.output).unwrap_or_default(),
            truncated: finished.truncated,
            exit_code: None,
            limit: Some(LimitHit::Timeout),
            files: Vec::new(),
            skipped: Vec::new(),
        });
    }
    if finished.truncated {
        return Err(Error::Sandbox(format!("the sandbox command printed more than {} bytes", finished.output.len())));
    }
    let answer: Answer = serde_json::from_slice(&finished.output).map_err(|error| {
        let status = finished.status.map(|s| s.to_string()).unwrap_or_default();
        Error::Sandbox(format!("the sandbox command ({status}) did not print its JSON answer: {error}"))
    })?;
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for file in answer.files {
        match workdir::read_regular(&workdir.join(&file.path), max_file_bytes) {
            Some(bytes) => files.push(ProducedBytes { name: file.name, bytes: bytes.into() }),
            None => skipped.push(file.name),
        }
    }
    let limit = answer.limit.map(|limit| match limit {
        Limit::Timeout => LimitHit::Timeout,
        Limit::Cpu => LimitHit::Cpu,
        Limit::Memory => LimitHit::Memory,
        Limit::Output => LimitHit::Output,
        Limit::Processes => LimitHit::Processes,
        Limit::FileSize => LimitHit::FileSize,
    });
    Ok(Read {
        truncated: limit == Some(LimitHit::Output),
        output: answer.output,
        exit_code: answer.exit_code,
        limit,
        files,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn finished(stdout: &str) -> Finished {
        Finished {
            output: stdout.as_bytes().to_vec(),
            truncated: false,
            timed_out: false,
            status: Some(std::process::ExitStatus::from_raw(0)),
        }
    }

    #[test]
    fn the_answer_names_output_limit_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "hi").unwrap();
        let stdout = r#"{"output": "x", "exit_code": 1, "limit": "memory",
                         "files": [{"name": "a.txt", "path": "a.txt"}, {"name": "gone", "path": "nope"}]}"#;

        let read = parse_answer(&finished(stdout), dir.path(), 1024).unwrap();

        assert_eq!((read.output.as_str(), read.exit_code, read.limit), ("x", Some(1), Some(LimitHit::Memory)));
        assert_eq!(read.files, [ProducedBytes { name: "a.txt".into(), bytes: "hi".into() }]);
        assert_eq!(read.skipped, ["gone"]);
    }

    #[test]
    fn an_answer_that_is_not_json_is_a_sandbox_error() {
        let dir = tempfile::tempdir().unwrap();

        let error = parse_answer(&finished("Traceback"), dir.path(), 1024).unwrap_err();

        assert!(error.to_string().starts_with("The sandbox could not run the code: the sandbox command"), "{error}");
    }
}
