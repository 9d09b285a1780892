//! `sandbox = "command"`: the operator's own sandbox program. palaver starts `command` (an
//! argv, no shell) with an empty environment in the call's work directory, as the leader of
//! a process group it kills when the run ends, writes the code to its stdin and closes it,
//! and reads one JSON object from its stdout (stderr goes to palaver's log):
//!
//! ```json
//! {"output": "42\n", "exit_code": 0, "limit": null}
//! ```
//!
//! `output` is required; `exit_code` (the code's) and `limit` (`timeout`, `cpu`, `memory`,
//! `output`, `processes`, `file_size`) are optional. Files travel through the work directory,
//! its current directory: what the program creates or changes there is handed back, as in the
//! other modes. (No list of paths: palaver would read them with its own rights.)

use super::{process::Finished, Error, LimitHit};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
struct Answer {
    output: String,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    limit: Option<LimitHit>,
}

/// The command's answer.
#[derive(Debug)]
pub struct Read {
    pub output: String,
    pub truncated: bool,
    pub exit_code: Option<i32>,
    pub limit: Option<LimitHit>,
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

pub fn parse_answer(finished: &Finished) -> Result<Read, Error> {
    if finished.timed_out {
        let output = String::from_utf8_lossy(&finished.output).into_owned();
        return Ok(Read {
            output: serde_json::from_str::<Answer>(&output).map(|a| a.output).unwrap_or_default(),
            truncated: finished.truncated,
            exit_code: None,
            limit: Some(LimitHit::Timeout),
        });
    }
    if finished.truncated {
        return Err(Error::Sandbox(format!("the sandbox command printed more than {} bytes", finished.output.len())));
    }
    let answer: Answer = serde_json::from_slice(&finished.output).map_err(|error| {
        let status = finished.status.map(|s| s.to_string()).unwrap_or_default();
        Error::Sandbox(format!("the sandbox command ({status}) did not print its JSON answer: {error}"))
    })?;
    let limit = answer.limit;
    Ok(Read { truncated: limit == Some(LimitHit::Output), output: answer.output, exit_code: answer.exit_code, limit })
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
    fn the_answer_names_output_exit_code_and_limit() {
        let read = parse_answer(&finished(r#"{"output": "x", "exit_code": 1, "limit": "memory"}"#)).unwrap();

        assert_eq!((read.output.as_str(), read.exit_code, read.limit), ("x", Some(1), Some(LimitHit::Memory)));
        assert_eq!(parse_answer(&finished(r#"{"output": ""}"#)).unwrap().limit, None);
    }

    #[test]
    fn an_answer_that_is_not_json_is_a_sandbox_error() {
        let error = parse_answer(&finished("Traceback")).unwrap_err();

        assert!(error.to_string().starts_with("The sandbox could not run the code: the sandbox command"), "{error}");
    }
}
