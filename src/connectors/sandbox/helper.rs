//! `palaver sandbox-exec`: the small helper the parent starts for each run. It confines
//! itself (user, resource limits, Landlock, seccomp) and then `exec`s the interpreter, which
//! inherits every restriction. palaver forbids `unsafe`, so it cannot confine a child between
//! `fork` and `exec` (`pre_exec`); re-executing itself as this helper is the safe way round.

use super::{landlock_rules, seccomp};
use anyhow::Context;
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{Gid, Uid};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// The uid and gid model code runs as when palaver runs as root: root ignores the process
/// limit, and model code has no business holding root's rights anyway.
pub const NOBODY: u32 = 65534;

/// Arguments of `palaver sandbox-exec`; only the parent writes them.
#[derive(clap::Args, Debug, Clone)]
pub struct HelperArgs {
    /// Confine with Landlock and seccomp (off for bubblewrap, which brings its own).
    #[arg(long)]
    pub landlock: bool,
    /// Apply everything, report what the kernel enforced, and exit instead of running PROGRAM.
    #[arg(long)]
    pub probe: bool,
    /// The work directory: the current directory of PROGRAM, and its only writable tree.
    #[arg(long)]
    pub workdir: PathBuf,
    /// A tree PROGRAM may read and execute (repeatable).
    #[arg(long = "read")]
    pub read: Vec<PathBuf>,
    /// A file PROGRAM may read and write besides the work directory (repeatable).
    #[arg(long = "write")]
    pub write: Vec<PathBuf>,
    #[arg(long)]
    pub cpu_secs: u64,
    #[arg(long)]
    pub memory_mb: u64,
    #[arg(long)]
    pub max_processes: u64,
    #[arg(long)]
    pub max_file_mb: u64,
    #[arg(long)]
    pub max_open_files: u64,
    /// `NAME=VALUE`: the whole environment of PROGRAM (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// The program and its arguments.
    #[arg(last = true)]
    pub program: Vec<OsString>,
}

/// Runs the helper: returns only on failure (or after a probe); on success the process has
/// become PROGRAM.
pub fn main(args: HelperArgs) -> std::process::ExitCode {
    match confine_and_exec(&args) {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            // The parent shows this to the model as the run's output.
            eprintln!("sandbox: {error:#}");
            std::process::ExitCode::from(125)
        }
    }
}

fn confine_and_exec(args: &HelperArgs) -> anyhow::Result<String> {
    if Uid::effective().is_root() {
        drop_root()?;
    }
    limit_resources(args)?;
    std::env::set_current_dir(&args.workdir).with_context(|| format!("entering {}", args.workdir.display()))?;
    let report = if args.landlock {
        let landlock = landlock_rules::restrict_self(&args.read, &args.write, &args.workdir)?;
        seccomp::apply()?;
        format!("{landlock}, seccomp filter, resource limits")
    } else {
        "resource limits".to_owned()
    };
    if args.probe {
        return Ok(report);
    }
    let (program, rest) = args.program.split_first().context("no program to run")?;
    let mut command = std::process::Command::new(program);
    command.args(rest).env_clear();
    for pair in &args.env {
        let (name, value) = pair.split_once('=').with_context(|| format!("`{pair}` is not NAME=VALUE"))?;
        command.env(name, value);
    }
    let error = command.exec();
    Err(anyhow::Error::new(error).context(format!("running {}", program.to_string_lossy())))
}

fn drop_root() -> anyhow::Result<()> {
    nix::unistd::setgroups(&[]).context("dropping supplementary groups")?;
    nix::unistd::setgid(Gid::from_raw(NOBODY)).context("switching to the nobody group")?;
    nix::unistd::setuid(Uid::from_raw(NOBODY)).context("switching to the nobody user")?;
    Ok(())
}

fn limit_resources(args: &HelperArgs) -> anyhow::Result<()> {
    const MIB: u64 = 1024 * 1024;
    let set = |resource: Resource, soft: u64, hard: u64| {
        setrlimit(resource, soft, hard).with_context(|| format!("setting {resource:?} to {soft}"))
    };
    // The hard CPU limit is a second later than the soft one: SIGXCPU first, SIGKILL after.
    set(Resource::RLIMIT_CPU, args.cpu_secs, args.cpu_secs + 1)?;
    set(Resource::RLIMIT_AS, args.memory_mb * MIB, args.memory_mb * MIB)?;
    set(Resource::RLIMIT_FSIZE, args.max_file_mb * MIB, args.max_file_mb * MIB)?;
    set(Resource::RLIMIT_NOFILE, args.max_open_files, args.max_open_files)?;
    set(Resource::RLIMIT_CORE, 0, 0)?;
    // RLIMIT_NPROC counts every task of the user, not of this run: the run may add
    // `max_processes` to what the user already has.
    let existing = tasks_of(Uid::current().as_raw());
    let processes = existing + args.max_processes;
    set(Resource::RLIMIT_NPROC, processes, processes)?;
    Ok(())
}

/// Tasks (threads included, as RLIMIT_NPROC counts them) whose real uid is `uid`.
fn tasks_of(uid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("status")).ok())
        .filter_map(|status| parse_status(&status))
        .filter(|(real_uid, _)| *real_uid == uid)
        .map(|(_, threads)| threads)
        .sum()
}

/// The real uid and the thread count of a `/proc/PID/status` text.
fn parse_status(status: &str) -> Option<(u32, u64)> {
    let field = |name: &str| {
        status.lines().find_map(|line| line.strip_prefix(name)).and_then(|rest| rest.split_whitespace().next())
    };
    Some((field("Uid:")?.parse().ok()?, field("Threads:")?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_status_gives_the_real_uid_and_the_threads() {
        let status = "Name:\tpython3\nUid:\t65534\t65534\t65534\t65534\nThreads:\t3\n";

        assert_eq!(parse_status(status), Some((65534, 3)));
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn this_processs_own_tasks_are_counted() {
        assert!(tasks_of(Uid::current().as_raw()) >= 1);
    }
}
