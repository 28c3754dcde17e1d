/*!
Small helpers shared by every module: atomic writes, content hashes, the process's peak
memory, and which names may become a file or directory name.

Nothing here knows about models, datasets or measures.
*/

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Whether a user-given name (an experiment's, a dataset's) can name a file or directory as
/// it is: ASCII letters, digits, `-`, `_` and `.`, not empty and not starting with `.` (so
/// never `.`, `..` or a hidden file), hence never a path that leaves its parent directory.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// flushed and renamed over `path`, so a reader never sees a half-written file and a crash
/// leaves either the old content or the new.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Like [`write_atomic`], but lets the caller stream the content into the temporary file.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".repro-").suffix(".tmp");
    // Temporary files are private (0600) by default; what repro writes (results, reports,
    // figures) is meant to be read by others, as a plain `File::create` would allow.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut temp = builder.tempfile_in(dir)?;
    {
        let mut writer = std::io::BufWriter::new(temp.as_file_mut());
        write(&mut writer)?;
        writer.flush()?;
    }
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|err| err.error)?;
    Ok(())
}

/// Hex-encoded sha256 of a file's content, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hex-encoded sha256 of bytes in memory.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The peak resident set size of this process so far, in bytes (`getrusage`'s `ru_maxrss`);
/// `None` where the platform does not report it.
pub fn peak_rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getrusage only writes the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            // Linux reports kibibytes.
            return u64::try_from(usage.ru_maxrss).ok().map(|kib| kib * 1024);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("out.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("out.txt")]);
    }

    #[test]
    fn sha256_matches_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&path).unwrap(), expected);
        assert_eq!(sha256_bytes(b"abc"), expected);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn peak_memory_grows_with_what_was_touched() {
        let before = super::peak_rss_bytes().unwrap();
        // More than the peak so far: freed memory the allocator reuses would not count.
        let touched = vec![1u8; before as usize + (64 << 20)];
        std::hint::black_box(&touched);
        let after = super::peak_rss_bytes().unwrap();
        assert!(after >= before + (32 << 20), "{before} -> {after}");
    }
}
