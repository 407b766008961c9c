//! The data directory: an exclusive lock for the lifetime of the process, and
//! the id of the node it belongs to (README, Running a node).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{WalError, io_error};
use crate::raft::NodeId;

const LOCK_FILE: &str = "LOCK";
const ID_FILE: &str = "node_id";

/// An open, locked data directory. The lock is released when this is dropped
/// (or the process dies: the kernel releases it).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    pub fn open(path: &Path, id: NodeId) -> Result<DataDir, WalError> {
        std::fs::create_dir_all(path).map_err(io_error(path, "create directory"))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path, "open"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(WalError::InUse { path: path.to_path_buf() }),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&lock_path, "lock")(e)),
        }
        check_id(path, id)?;
        Ok(DataDir { path: path.to_path_buf(), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Stores the id on first use; refuses another one afterwards.
fn check_id(path: &Path, id: NodeId) -> Result<(), WalError> {
    let id_path = path.join(ID_FILE);
    match std::fs::read_to_string(&id_path) {
        Ok(text) => {
            let stored: u64 = text.trim().parse().map_err(|_| WalError::Corrupt {
                file: id_path.clone(),
                offset: 0,
                what: format!("node id file holds {:?}", text.trim()),
            })?;
            if stored != id.0 {
                return Err(WalError::WrongNode { path: path.to_path_buf(), stored, given: id.0 });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(found) = holds_state(path) {
                return Err(WalError::Corrupt {
                    file: id_path,
                    offset: 0,
                    what: format!(
                        "missing, but the directory holds {}: it belongs to a node whose id is lost (a damaged \
                         directory?); refusing to start",
                        found.display()
                    ),
                });
            }
            let tmp = path.join(format!("{ID_FILE}.tmp"));
            let mut f = File::create(&tmp).map_err(io_error(&tmp, "create"))?;
            writeln!(f, "{}", id.0).map_err(io_error(&tmp, "write"))?;
            f.sync_all().map_err(io_error(&tmp, "fsync"))?;
            std::fs::rename(&tmp, &id_path).map_err(io_error(&id_path, "rename"))?;
            sync_dir(path)
        }
        Err(e) => Err(io_error(&id_path, "read")(e)),
    }
}

/// A file showing that a node already used the directory: a log segment, a
/// snapshot, a cluster id.
fn holds_state(path: &Path) -> Option<PathBuf> {
    let listed = |dir: &Path, suffix: &str| -> Option<PathBuf> {
        std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| p.to_string_lossy().ends_with(suffix))
    };
    listed(&path.join("wal"), ".wal")
        .or_else(|| listed(&path.join("snapshots"), ".snap"))
        .or_else(|| Some(path.join("cluster_id")).filter(|p| p.exists()))
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(path: &Path) -> Result<(), WalError> {
    File::open(path).and_then(|d| d.sync_all()).map_err(io_error(path, "fsync directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_refused_and_ids_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-1");
        let first = DataDir::open(&path, NodeId(1)).unwrap();
        let err = DataDir::open(&path, NodeId(1)).unwrap_err();
        assert!(err.to_string().contains("in use by another running node"), "{err}");
        drop(first);
        DataDir::open(&path, NodeId(1)).unwrap();
        let err = DataDir::open(&path, NodeId(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: the data directory belongs to node 1, not node 2 (use its own --data)", path.display())
        );
    }

    #[test]
    fn a_lost_node_id_next_to_a_log_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-1");
        std::fs::create_dir_all(path.join("wal")).unwrap();
        std::fs::write(path.join("wal/0000000000000001.wal"), b"x").unwrap();
        let err = DataDir::open(&path, NodeId(3)).unwrap_err().to_string();
        assert!(err.contains("node_id") && err.contains("0000000000000001.wal"), "{err}");
        // A fresh directory is fine.
        DataDir::open(&dir.path().join("node-2"), NodeId(2)).unwrap();
    }
}
