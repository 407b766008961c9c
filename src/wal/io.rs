//! The file operations the log makes, behind a trait so that tests can fail
//! any of them (ENOSPC, EIO) at a chosen point without a full disk.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub trait WalIo: Send {
    /// Creates (or recreates) a segment: `size` bytes of zeros, then the
    /// header at offset 0, made durable with its directory entry. The file
    /// appears under its name whole or not at all.
    fn create(&mut self, path: &Path, size: u64, header: &[u8]) -> io::Result<()>;
    /// Replaces a small file whole, durably (temporary file, sync, rename,
    /// directory sync).
    fn replace(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Starts making, in the background, the segment `create` will be asked
    /// for next, so that the writer does not wait for its zeros and sync
    /// when it rolls over. The default makes nothing in advance.
    fn prepare(&mut self, _path: &Path, _size: u64, _header: &[u8]) {}
    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// fdatasync.
    fn sync(&mut self, path: &Path) -> io::Result<()>;
    fn remove(&mut self, path: &Path) -> io::Result<()>;
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
}

/// Where a file is made before it gets its name.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Where a segment made in advance waits until it is needed.
pub fn spare_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".spare");
    path.with_file_name(name)
}

/// A segment being made in advance: the one it will become, its size, and
/// the thread writing it.
struct Spare {
    path: PathBuf,
    size: u64,
    thread: std::thread::JoinHandle<io::Result<File>>,
}

/// The real thing: pwrite and fdatasync on preallocated files.
#[derive(Default)]
pub struct FileIo {
    files: HashMap<PathBuf, File>,
    spare: Option<Spare>,
}

/// Writes `size` bytes of zeros and the header to `path`, and syncs it.
fn make_segment(path: &Path, size: u64, header: &[u8]) -> io::Result<File> {
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    // Writing the zeros (rather than set_len, which leaves a sparse file)
    // allocates the blocks now, so that each later fdatasync only flushes
    // data, not the file's size and block map.
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.write_all_at(header, 0)?;
    f.sync_all()?;
    Ok(f)
}

impl FileIo {
    fn file(&mut self, path: &Path) -> io::Result<&File> {
        if !self.files.contains_key(path) {
            let f = OpenOptions::new().read(true).write(true).open(path)?;
            self.files.insert(path.to_path_buf(), f);
        }
        Ok(&self.files[path])
    }
}

impl WalIo for FileIo {
    fn create(&mut self, path: &Path, size: u64, header: &[u8]) -> io::Result<()> {
        self.files.remove(path);
        let prepared = match self.spare.take() {
            Some(s) if s.path == path && s.size == size => {
                let made = s.thread.join().unwrap_or_else(|_| Err(io::Error::other("the spare segment's thread died")));
                made.ok().map(|f| (spare_path(path), f))
            }
            Some(s) => {
                let _ = s.thread.join();
                let _ = std::fs::remove_file(spare_path(&s.path));
                None
            }
            None => None,
        };
        let (made, f) = match prepared {
            Some(ready) => ready,
            None => {
                let tmp = tmp_path(path);
                let f = make_segment(&tmp, size, header).inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })?;
                (tmp, f)
            }
        };
        std::fs::rename(&made, path)?;
        self.files.insert(path.to_path_buf(), f);
        if let Some(dir) = path.parent() {
            self.sync_dir(dir)?;
        }
        Ok(())
    }

    fn prepare(&mut self, path: &Path, size: u64, header: &[u8]) {
        if let Some(old) = self.spare.take() {
            let _ = old.thread.join();
            let _ = std::fs::remove_file(spare_path(&old.path));
        }
        let (spare, header) = (spare_path(path), header.to_vec());
        let thread = std::thread::Builder::new().name("wal-spare".into()).spawn(move || {
            let made = make_segment(&spare, size, &header);
            if let Err(e) = &made {
                // A half-made spare would hold the space the segment needs
                // when it is made again, in the foreground.
                let _ = std::fs::remove_file(&spare);
                log::warn!("cannot make the next log segment ahead of time: {e}");
            }
            made
        });
        match thread {
            Ok(thread) => self.spare = Some(Spare { path: path.to_path_buf(), size, thread }),
            Err(e) => log::warn!("cannot start a thread to make the next log segment: {e}"),
        }
    }

    fn replace(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = tmp_path(path);
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        match path.parent() {
            Some(dir) => self.sync_dir(dir),
            None => Ok(()),
        }
    }

    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file(path)?.write_all_at(bytes, offset)
    }

    fn sync(&mut self, path: &Path) -> io::Result<()> {
        self.file(path)?.sync_data()
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.files.remove(path);
        std::fs::remove_file(path)
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
