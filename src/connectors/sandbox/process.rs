//! Runs one sandboxed process group: feeds it the code, keeps at most so much of its output,
//! enforces the wall clock, and kills the whole group when the run ends, however it ends
//! (finished, timed out, or the caller's future dropped).

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What came out of a run, before it is read as a sandbox's answer.
#[derive(Debug)]
pub struct Finished {
    pub output: Vec<u8>,
    /// Output past the cap was dropped.
    pub truncated: bool,
    pub timed_out: bool,
    /// `None` when the wall clock ended the run.
    pub status: Option<ExitStatus>,
}

/// Kills its process group when dropped, unless the run already did.
struct Group {
    pgid: Option<Pid>,
}

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH (nobody left) is the common, fine case.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long the output is still read after the group was killed: the pipe closes as soon as
/// the last member dies, so this only bounds a pathological case.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);

/// Spawns `command` as the leader of a new process group, writes `stdin` to it, and reads its
/// stdout (and its stderr too when `merge_stderr`, in one pipe, so they interleave as written).
pub async fn run(
    command: std::process::Command,
    stdin: Vec<u8>,
    merge_stderr: bool,
    max_output: usize,
    timeout: Duration,
) -> std::io::Result<Finished> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut command = tokio::process::Command::from(command);
    let stderr = if merge_stderr { Stdio::from(write_end.try_clone()?) } else { Stdio::inherit() };
    command.stdin(Stdio::piped()).stdout(Stdio::from(write_end)).stderr(stderr).process_group(0).kill_on_drop(true);
    let mut child = command.spawn()?;
    // The command keeps the parent's copies of the pipe's write end: without dropping it,
    // the output would never reach end-of-file.
    drop(command);
    let mut group = Group { pgid: child.id().map(|id| Pid::from_raw(id as i32)) };

    let mut child_stdin = child.stdin.take();
    let feed = async move {
        if let Some(pipe) = child_stdin.as_mut() {
            // A program that exits without reading its input is not an error here.
            let _ = pipe.write_all(&stdin).await;
        }
        drop(child_stdin);
    };
    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)?;
    let reader = tokio::spawn(read_capped(receiver, max_output));

    let status = tokio::time::timeout(timeout, async {
        let (status, ()) = tokio::join!(child.wait(), feed);
        status
    })
    .await;
    let timed_out = status.is_err();
    let status = status.ok().transpose()?;
    // Whatever the leader left running (background children, a fork bomb) ends with it.
    group.kill();
    let (output, truncated) = match tokio::time::timeout(DRAIN_AFTER_KILL, reader).await {
        Ok(Ok(read)) => read?,
        Ok(Err(join)) => return Err(std::io::Error::other(join)),
        Err(_) => (Vec::new(), true),
    };
    if timed_out {
        // Reaped here so no zombie waits for tokio's orphan queue.
        let _ = child.wait().await;
    }
    Ok(Finished { output, truncated, timed_out, status })
}

/// Reads to end-of-file, keeping the first `max` bytes and discarding the rest.
async fn read_capped(mut receiver: tokio::net::unix::pipe::Receiver, max: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = receiver.read(&mut buffer).await?;
        if read == 0 {
            return Ok((kept, truncated));
        }
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&buffer[..read.min(room)]);
        truncated |= read > room;
    }
}
