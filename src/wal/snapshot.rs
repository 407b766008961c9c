//! Snapshot files: `snapshots/<index>-<term>.snap`, written to a temporary
//! file, fsynced, renamed into place, and the directory fsynced: a crash at
//! any point leaves either the old snapshot or the new one, never half of
//! one under a real name.
//!
//! ```text
//! "RKVSNAP1" | meta_len u32 | snapshot meta (codec) | data ... | data_len u64 | crc u32 (of all before it)
//! ```

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::datadir::sync_dir;
use super::error::{WalError, io_error};
use crate::codec::{Reader, Writer};
use crate::raft::SnapshotMeta;

const MAGIC: &[u8; 8] = b"RKVSNAP1";
const TRAILER_BYTES: u64 = 8 + 4;

#[derive(Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

/// A complete, checked snapshot on disk.
#[derive(Debug)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    data_offset: u64,
    pub data_bytes: u64,
}

impl SnapshotFile {
    /// Reads up to `len` bytes of the data from `offset` (for chunks sent to
    /// a follower).
    pub fn read_chunk(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let len = len.min(self.data_bytes.saturating_sub(offset) as usize);
        let mut buf = vec![0u8; len];
        File::open(&self.path)?.read_exact_at(&mut buf, self.data_offset + offset)?;
        Ok(buf)
    }

    /// The whole data, as a reader.
    pub fn reader(&self) -> io::Result<impl Read> {
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(self.data_offset))?;
        Ok(io::BufReader::new(f).take(self.data_bytes))
    }
}

/// Writes one snapshot; `finish` makes it durable and visible.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    hasher: crc32fast::Hasher,
    data_bytes: u64,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.data_bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl SnapshotWriter {
    /// Makes the snapshot durable and visible under its real name.
    pub fn finish(self) -> Result<PathBuf, WalError> {
        self.seal()?.publish()
    }

    /// Completes and fsyncs the file under its temporary name, so that it
    /// can be checked before anything (a restart included) can take it for
    /// a snapshot.
    pub fn seal(mut self) -> Result<SealedSnapshot, WalError> {
        let trailer_len = self.data_bytes.to_le_bytes();
        self.hasher.update(&trailer_len);
        let crc = self.hasher.clone().finalize();
        let tmp = self.tmp.clone();
        let write = |w: &mut BufWriter<File>| -> io::Result<()> {
            w.write_all(&trailer_len)?;
            w.write_all(&crc.to_le_bytes())?;
            w.flush()?;
            w.get_ref().sync_all()
        };
        write(&mut self.out).map_err(io_error(&tmp, "write and fsync snapshot"))?;
        Ok(SealedSnapshot { tmp: self.tmp, path: self.path, dir: self.dir })
    }

    /// Gives up on this file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// A complete snapshot file still under its temporary name.
pub struct SealedSnapshot {
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
}

impl SealedSnapshot {
    /// The file, its framing and CRC checked.
    pub fn file(&self) -> Result<SnapshotFile, String> {
        check(&self.tmp)
    }

    /// Publishes a file already checked through `file`.
    pub fn publish_as(self, mut file: SnapshotFile) -> Result<SnapshotFile, WalError> {
        file.path = self.publish()?;
        Ok(file)
    }

    pub fn publish(self) -> Result<PathBuf, WalError> {
        std::fs::rename(&self.tmp, &self.path).map_err(io_error(&self.path, "rename snapshot"))?;
        sync_dir(&self.dir)?;
        Ok(self.path)
    }

    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl SnapshotStore {
    /// Opens the snapshot directory, removing temporary files a crash left.
    pub fn open(data: &Path) -> Result<SnapshotStore, WalError> {
        let dir = data.join("snapshots");
        std::fs::create_dir_all(&dir).map_err(io_error(&dir, "create directory"))?;
        for e in std::fs::read_dir(&dir).map_err(io_error(&dir, "list"))?.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                log::warn!("removing {}: a snapshot left unfinished by a crash", e.path().display());
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(SnapshotStore { dir })
    }

    pub fn create(&self, meta: &SnapshotMeta) -> Result<SnapshotWriter, WalError> {
        let name = format!("{:016x}-{:016x}", meta.index.0, meta.term.0);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let path = self.dir.join(format!("{name}.snap"));
        let file = File::create(&tmp).map_err(io_error(&tmp, "create"))?;
        let mut header = Vec::new();
        header.extend_from_slice(MAGIC);
        let mut meta_bytes = Vec::new();
        Writer::new(&mut meta_bytes).snapshot_meta(meta);
        header.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
        header.extend_from_slice(&meta_bytes);
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header).map_err(io_error(&tmp, "write"))?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header);
        Ok(SnapshotWriter { out, hasher, data_bytes: 0, tmp, path, dir: self.dir.clone() })
    }

    fn candidates(&self) -> Result<Vec<PathBuf>, WalError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(io_error(&self.dir, "list"))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "snap"))
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// The newest snapshot that checks out; broken ones are reported and
    /// skipped.
    pub fn latest(&self) -> Result<Option<SnapshotFile>, WalError> {
        for path in self.candidates()?.into_iter().rev() {
            match check(&path) {
                Ok(s) => return Ok(Some(s)),
                Err(e) => log::error!("{}: skipping a broken snapshot: {e}", path.display()),
            }
        }
        Ok(None)
    }

    /// The snapshot at `path`, checked (after `SnapshotWriter::finish`).
    pub fn file(&self, path: &Path) -> Result<SnapshotFile, WalError> {
        check(path).map_err(|what| WalError::Io {
            path: path.to_path_buf(),
            op: "check snapshot",
            source: io::Error::other(what),
        })
    }

    /// Removes snapshots older than `keep` (after a newer one is durable),
    /// except `also` (an older one still in use).
    pub fn remove_older_except(&self, keep: &Path, also: Option<&Path>) -> Result<(), WalError> {
        for path in self.candidates()? {
            if path.as_path() < keep && Some(path.as_path()) != also {
                std::fs::remove_file(&path).map_err(io_error(&path, "remove"))?;
            }
        }
        sync_dir(&self.dir)
    }
}

/// Reads a whole snapshot file and checks its framing and CRC.
fn check(path: &Path) -> Result<SnapshotFile, String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    let mut hasher = crc32fast::Hasher::new();
    let mut head = vec![0u8; (size.min(12 + 64 * 1024)) as usize];
    f.read_exact(&mut head).map_err(|e| e.to_string())?;
    if head.len() < 12 || &head[..8] != MAGIC {
        return Err("not a raftkv snapshot".into());
    }
    let meta_len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as u64;
    let data_offset = 12 + meta_len;
    if data_offset + TRAILER_BYTES > size || data_offset > head.len() as u64 {
        return Err(format!("{size} bytes cannot hold its {meta_len}-byte header"));
    }
    let mut r = Reader::new(&head[12..data_offset as usize]);
    let meta = r.snapshot_meta().map_err(|e| e.to_string())?;
    f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let mut left = size - 4;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n]).map_err(|e| e.to_string())?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut trailer = [0u8; 4];
    f.read_exact(&mut trailer).map_err(|e| e.to_string())?;
    let (expected, got) = (u32::from_le_bytes(trailer), hasher.finalize());
    if expected != got {
        return Err(format!("CRC {got:#010x}, expected {expected:#010x}"));
    }
    let mut len = [0u8; 8];
    f.read_exact_at(&mut len, size - TRAILER_BYTES).map_err(|e| e.to_string())?;
    let data_bytes = u64::from_le_bytes(len);
    if data_offset + data_bytes + TRAILER_BYTES != size {
        return Err(format!("data of {data_bytes} bytes does not fit a file of {size}"));
    }
    Ok(SnapshotFile { meta, path: path.to_path_buf(), data_offset, data_bytes })
}
