//! Writing and checking files that hold secrets or must survive a crash.
//!
//! One implementation for the CA and TLS material, the signing keys, the
//! secret pepper and the admin token: files are created with
//! `O_CREAT|O_EXCL` (never overwriting) and their final mode from the first
//! byte (never chmod after writing), then fsynced together with their
//! directory, so a crash leaves the old state or the new, never a file that
//! exists without its contents.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;

/// Creates `path` (which must not exist) with mode 0600 when `private`,
/// 0644 otherwise; writes `contents`; fsyncs the file and its directory.
pub fn write_new_file(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Replaces `path` atomically with a new file of `contents` (mode 0600 when
/// `private`): written under a fresh random name in the same directory with
/// `O_EXCL`, then renamed over `path`. A symlink planted at `path` (e.g. in
/// `/tmp`) is replaced, never followed, and readers see the old file or the
/// new one, never a half-written key.
pub fn replace_file(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut random = [0u8; 8];
    aws_lc_rs::rand::fill(&mut random)
        .map_err(|_| std::io::Error::other("random source failed"))?;
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        hex::encode(random)
    ));
    write_new_file(&temporary, contents, private)?;
    if let Err(error) = std::fs::rename(&temporary, path) {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    sync_dir(dir)
}

/// fsyncs a directory, making creations and renames in it durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The permission bits of `path` if group or others may access it (a
/// private file must be 0600 or stricter, as ssh demands of its keys).
pub fn exposed_mode(path: &Path) -> std::io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then_some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_new_file(&path, b"x", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        assert_eq!(exposed_mode(&path).unwrap(), None);
        let err = write_new_file(&path, b"y", true).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"x", "never overwritten");
        replace_file(&path, b"z", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"z", "replaced atomically");
        assert_eq!(exposed_mode(&path).unwrap(), None);
        let public = dir.path().join("public");
        write_new_file(&public, b"p", false).unwrap();
        assert_eq!(exposed_mode(&public).unwrap(), Some(0o644));
    }
}
