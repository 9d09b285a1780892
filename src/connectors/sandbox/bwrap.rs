//! bubblewrap's arguments: every namespace unshared (no network but a private loopback, its
//! own PIDs), the system's read-only trees bound at their own paths, the work directory at
//! `/work`, a private `/tmp`, `/dev` and `/proc`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where the work directory appears inside the sandbox.
pub const WORKDIR_INSIDE: &str = "/work";

/// bwrap's options up to and including `--`; the program follows.
pub fn arguments(read: &[PathBuf], workdir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["--unshare-all", "--die-with-parent", "--new-session"].map(OsString::from).into();
    for path in read {
        // The devices and /proc come from bwrap's own mounts below.
        if path.starts_with("/dev") || path.starts_with("/proc") {
            continue;
        }
        match std::fs::read_link(path) {
            // `/lib -> usr/lib` on merged-/usr systems: the same link inside.
            Ok(target) => args.extend([OsString::from("--symlink"), target.into(), path.into()]),
            Err(_) => args.extend([OsString::from("--ro-bind-try"), path.into(), path.into()]),
        }
    }
    args.extend(["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"].map(OsString::from));
    args.extend([OsString::from("--bind"), workdir.into(), WORKDIR_INSIDE.into()]);
    args.extend(["--chdir", WORKDIR_INSIDE, "--"].map(OsString::from));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_directory_is_the_only_writable_bind() {
        let args = arguments(&[PathBuf::from("/usr"), PathBuf::from("/dev/null")], Path::new("/var/w/abc"));
        let text: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();

        let binds: Vec<&[String]> = text.windows(3).filter(|w| w[0] == "--bind").collect();
        assert_eq!(binds, [&["--bind".to_owned(), "/var/w/abc".to_owned(), "/work".to_owned()][..]]);
        assert!(text.windows(3).any(|w| w == ["--ro-bind-try", "/usr", "/usr"]));
        assert!(!text.iter().any(|a| a == "/dev/null"));
        assert_eq!(text.last().map(String::as_str), Some("--"));
    }
}
