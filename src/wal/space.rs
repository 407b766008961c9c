//! Free space on the data directory's filesystem. A node whose disk fills
//! stops (its next segment cannot be made, or a sync fails), and a cluster
//! whose nodes fill their disks at the same rate, as replicas do, stops as
//! a whole: the warning below is the operator's chance to act first.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Below this much free space the node warns: about four log segments.
pub const LOW_SPACE_BYTES: u64 = 256 << 20;

unsafe extern "C" {
    fn statvfs(path: *const std::ffi::c_char, buf: *mut u64) -> i32;
}

/// Bytes available to this process and the filesystem's size.
pub fn free_bytes(path: &Path) -> io::Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("path holds a NUL byte"))?;
    // `struct statvfs` on 64-bit Linux is eleven unsigned 64-bit fields and
    // six ints (112 bytes); the buffer is larger, so the kernel's view of it
    // always fits. Fields: bsize, frsize, blocks, bfree, bavail, ...
    let mut buf = [0u64; 32];
    // SAFETY: `c` is a NUL-terminated path, `buf` is writable and larger
    // than `struct statvfs`.
    if unsafe { statvfs(c.as_ptr(), buf.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = if buf[1] != 0 { buf[1] } else { buf[0] };
    Ok((buf[4].saturating_mul(frsize), buf[2].saturating_mul(frsize)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filesystem_has_a_size_and_free_space_within_it() {
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = super::free_bytes(dir.path()).unwrap();
        assert!(total > 0 && free <= total, "{free} of {total}");
        assert!(super::free_bytes(&dir.path().join("missing")).is_err());
    }
}
