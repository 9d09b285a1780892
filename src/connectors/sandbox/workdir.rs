//! Work directories: one per key (a conversation's branch), kept between runs so a later run
//! reads what an earlier one wrote, removed once unused for the TTL. Also finds the files a
//! run created or changed, to hand back.

use super::ProducedBytes;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// palaver's own files in a work directory (matplotlib's cache, temp files, the last-use
/// mark); never handed back as produced files.
pub const PRIVATE_DIR: &str = ".palaver";
const LAST_USED: &str = "last_used";
/// Most files handed back per run: a loop writing thousands of files would otherwise turn
/// into thousands of stored files.
const MAX_FILES: usize = 64;

type Snapshot = HashMap<PathBuf, (u64, SystemTime)>;

pub struct Workdirs {
    root: PathBuf,
    ttl: Duration,
    /// The uid that runs the code when it differs from palaver's (palaver runs as root).
    owner: Option<u32>,
    in_use: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A work directory held for one run; another run with the same key waits for it.
pub struct Held {
    pub path: PathBuf,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Workdirs {
    pub fn new(root: PathBuf, ttl: Duration, owner: Option<u32>) -> std::io::Result<Self> {
        ensure_root(&root)?;
        Ok(Workdirs { root, ttl, owner, in_use: Mutex::new(HashMap::new()) })
    }

    /// The directory of `key`, created if needed, held until the returned value drops.
    pub async fn hold(&self, key: &str) -> std::io::Result<Held> {
        let name = dir_name(key);
        let lock = self.lock_for(&name);
        let guard = lock.lock_owned().await;
        let path = self.root.join(&name);
        let prepared = path.clone();
        let owner = self.owner;
        tokio::task::spawn_blocking(move || prepare(&prepared, owner)).await.map_err(std::io::Error::other)??;
        Ok(Held { path, _guard: guard })
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        // Locks nobody holds or waits for are dropped as they are passed by.
        in_use.retain(|_, lock| Arc::strong_count(lock) > 1);
        in_use.entry(name.to_owned()).or_default().clone()
    }

    /// Removes the work directories unused for the TTL; returns how many.
    pub fn remove_expired(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let lock = self.lock_for(&name);
            let Ok(_guard) = lock.try_lock() else {
                continue;
            };
            let path = entry.path();
            let last_used = std::fs::metadata(path.join(PRIVATE_DIR).join(LAST_USED))
                .or_else(|_| std::fs::symlink_metadata(&path))
                .and_then(|m| m.modified());
            let expired = last_used.is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= self.ttl);
            if expired && std::fs::remove_dir_all(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// Creates the root of the work directories, or checks the one found: under a shared temp
/// directory, someone else could have made it (or a symlink by its name) first.
pub fn ensure_root(root: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(root) {
        // Runs may pass through to their own directory but not list the others.
        Ok(()) => return std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(root)?;
            return std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711));
        }
        Err(error) => return Err(error),
    }
    let meta = std::fs::symlink_metadata(root)?;
    let ours = std::os::unix::fs::MetadataExt::uid(&meta) == nix::unistd::Uid::effective().as_raw();
    if !meta.is_dir() || !ours || meta.permissions().mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a directory of palaver's user that only it can write",
            root.display()
        )));
    }
    Ok(())
}

/// A fixed-length name no key can turn into a path elsewhere.
pub fn dir_name(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

fn prepare(path: &Path, owner: Option<u32>) -> std::io::Result<()> {
    let private = path.join(PRIVATE_DIR);
    for dir in [path.to_path_buf(), private.clone(), private.join("tmp")] {
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
                if let Some(uid) = owner {
                    std::os::unix::fs::lchown(&dir, Some(uid), Some(uid))?;
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    // Rewritten by palaver, not the run, so code cannot keep its directory alive forever
    // without being called.
    let mark = private.join(LAST_USED);
    let _ = std::fs::remove_file(&mark);
    std::fs::write(&mark, b"")
}

/// Sizes and modification times of the regular files under `dir` (symlinks not followed).
pub fn snapshot(dir: &Path) -> Snapshot {
    let mut files = HashMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if current == dir && entry.file_name() == PRIVATE_DIR {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                files.insert(path, (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
    }
    files
}

/// The regular files of `dir` that are new or changed since `before`, each at most
/// `max_bytes`, named by their path relative to `dir`; larger files are named in the second
/// list, not read.
pub fn produced(dir: &Path, before: &Snapshot, max_bytes: u64) -> (Vec<ProducedBytes>, Vec<String>) {
    let after = snapshot(dir);
    let mut changed: Vec<&PathBuf> =
        after.iter().filter(|(path, stamp)| before.get(*path) != Some(stamp)).map(|(path, _)| path).collect();
    changed.sort();
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for path in changed {
        let name = path.strip_prefix(dir).unwrap_or(path).to_string_lossy().into_owned();
        if files.len() == MAX_FILES {
            skipped.push(name);
            continue;
        }
        match read_regular(path, max_bytes) {
            Some(bytes) => files.push(ProducedBytes { name, bytes: bytes.into() }),
            None => skipped.push(name),
        }
    }
    (files, skipped)
}

/// The file's bytes if it is still a regular file (not a symlink swapped in since the
/// snapshot) of at most `max_bytes`.
pub fn read_regular(path: &Path, max_bytes: u64) -> Option<Vec<u8>> {
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > max_bytes {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= max_bytes).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_someone_else_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");

        ensure_root(&root).unwrap();
        assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o711);
        ensure_root(&root).unwrap();

        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(ensure_root(&root).is_err());
        std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
        assert!(ensure_root(&dir.path().join("link")).is_err());
    }

    #[test]
    fn a_key_maps_to_a_fixed_hex_name_whatever_it_contains() {
        let name = dir_name("../../etc/conv_1:main");

        assert_eq!(name.len(), 32);
        assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(name, dir_name("../../etc/conv_1:main"));
        assert_ne!(name, dir_name("conv_2"));
    }

    #[test]
    fn new_and_changed_regular_files_are_produced_but_not_symlinks_or_private_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kept.txt"), "old").unwrap();
        std::fs::write(dir.path().join("changed.txt"), "old").unwrap();
        std::fs::create_dir(dir.path().join(PRIVATE_DIR)).unwrap();
        let before = snapshot(dir.path());
        std::fs::write(dir.path().join("changed.txt"), "newer").unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        std::fs::write(dir.path().join("out/data.csv"), "a,b").unwrap();
        std::fs::write(dir.path().join("big.bin"), vec![0u8; 100]).unwrap();
        std::fs::write(dir.path().join(PRIVATE_DIR).join("cache"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();

        let (files, skipped) = produced(dir.path(), &before, 10);

        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["changed.txt", "out/data.csv"]);
        assert_eq!(&files[1].bytes[..], b"a,b");
        assert_eq!(skipped, ["big.bin"]);
    }

    #[tokio::test]
    async fn an_unused_work_directory_is_removed_after_the_ttl_and_a_fresh_one_is_kept() {
        let root = tempfile::tempdir().unwrap();
        let expiring = Workdirs::new(root.path().join("w"), Duration::ZERO, None).unwrap();
        let held = expiring.hold("conv_1").await.unwrap();
        assert!(held.path.is_dir());
        assert_eq!(expiring.remove_expired(), 0, "a held directory stays");
        drop(held);

        assert_eq!(expiring.remove_expired(), 1);
        assert_eq!(std::fs::read_dir(root.path().join("w")).unwrap().count(), 0);

        let lasting = Workdirs::new(root.path().join("w"), Duration::from_secs(3600), None).unwrap();
        drop(lasting.hold("conv_2").await.unwrap());
        assert_eq!(lasting.remove_expired(), 0);
    }
}
