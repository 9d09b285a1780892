//! The Landlock ruleset of a run: read (and execute) the trees the parent lists, read and
//! write the work directory and a few device files, nothing else; no TCP bind or connect, no
//! abstract Unix sockets or signals reaching outside the run.

use anyhow::Context;
use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use std::path::{Path, PathBuf};

/// The newest ABI this ruleset was written and tested against (filesystem, TCP, scopes).
const ABI_USED: ABI = ABI::V6;

/// Confines the calling thread (and whatever it `exec`s) for good; fails unless the kernel
/// enforces at least the filesystem rules.
pub fn restrict_self(read: &[PathBuf], write: &[PathBuf], workdir: &Path) -> anyhow::Result<String> {
    let read_access = AccessFs::from_read(ABI_USED) | AccessFs::Execute;
    // The work directory holds plain files: nothing is executed from it, and no device node
    // is made in it.
    let workdir_access = AccessFs::from_all(ABI_USED) & !(AccessFs::Execute | AccessFs::MakeChar | AccessFs::MakeBlock);
    let file_write = AccessFs::from_read(ABI_USED) | AccessFs::WriteFile | AccessFs::Truncate;
    let status = Ruleset::default()
        // Filesystem rules are required; the network and scope rules are best effort on older
        // kernels, where seccomp still denies every socket.
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI_USED))?
        .handle_access(AccessNet::from_all(ABI_USED))?
        .scope(Scope::from_all(ABI_USED))?
        .create()?
        .add_rules(path_beneath_rules(read, read_access))?
        .add_rules(path_beneath_rules(write, file_write))?
        .add_rules(path_beneath_rules([workdir], workdir_access))?
        .restrict_self()
        .context("applying the Landlock ruleset")?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok("Landlock (fully enforced)".to_owned()),
        RulesetStatus::PartiallyEnforced => Ok("Landlock (partially enforced: an older kernel ABI)".to_owned()),
        RulesetStatus::NotEnforced => anyhow::bail!("the kernel does not enforce Landlock"),
    }
}
