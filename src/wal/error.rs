//! What can go wrong with the data directory and the log, with the file and
//! byte offset where it went wrong.

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum WalError {
    /// Another process holds the directory's lock.
    InUse { path: PathBuf },
    /// The directory belongs to another node id.
    WrongNode { path: PathBuf, stored: u64, given: u64 },
    /// A record that recovery cannot trust, where synced data should be.
    Corrupt { file: PathBuf, offset: u64, what: String },
    /// An operating-system error on a file.
    Io { path: PathBuf, op: &'static str, source: io::Error },
    /// An earlier write or sync failed; the log takes no more writes (an
    /// fsync error cannot be retried safely).
    Failed { first: String },
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::InUse { path } => {
                write!(f, "{}: the data directory is in use by another running node", path.display())
            }
            WalError::WrongNode { path, stored, given } => write!(
                f,
                "{}: the data directory belongs to node {stored}, not node {given} (use its own --data)",
                path.display()
            ),
            WalError::Corrupt { file, offset, what } => write!(
                f,
                "{}: corrupt write-ahead log at byte {offset}: {what}; refusing to start (a synced record would be lost)",
                file.display()
            ),
            WalError::Io { path, op, source } => write!(f, "{}: {op} failed: {source}", path.display()),
            WalError::Failed { first } => {
                write!(f, "the write-ahead log failed earlier ({first}) and takes no more writes")
            }
        }
    }
}

impl std::error::Error for WalError {}

pub(super) fn io_error(path: impl Into<PathBuf>, op: &'static str) -> impl FnOnce(io::Error) -> WalError {
    let path = path.into();
    move |source| WalError::Io { path, op, source }
}
