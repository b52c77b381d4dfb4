//! Thin, safe wrappers over the `*at` syscalls the passthrough backend uses.
//! Every path argument is a single name relative to a directory fd.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Turns a `-1` return into the thread's errno.
pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)`.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid C string; the returned fd is owned by us.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    })?;
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstatat(fd, "", AT_EMPTY_PATH)`: attributes of what `fd` refers to.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat64> {
    // SAFETY: stat64 is plain data, fully written by a successful call.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid empty C string and `st` a valid out pointer.
    cvt(unsafe {
        libc::fstatat64(
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// The decimal name of `fd` under `/proc/self/fd`.
pub fn fd_name(fd: BorrowedFd<'_>) -> std::ffi::CString {
    // A decimal number never contains NUL.
    std::ffi::CString::new(fd.as_raw_fd().to_string()).unwrap_or_default()
}

/// An opaque kernel file handle (`name_to_handle_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHandle {
    handle_type: i32,
    bytes: Vec<u8>,
}

/// Room for any handle (`MAX_HANDLE_SZ`).
const MAX_HANDLE_SZ: usize = 128;

#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

impl FileHandle {
    /// The handle of what `fd` (an O_PATH fd) refers to, and its mount id.
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<(FileHandle, i32)> {
        let mut raw = RawHandle {
            handle_bytes: MAX_HANDLE_SZ as u32,
            handle_type: 0,
            f_handle: [0; MAX_HANDLE_SZ],
        };
        let mut mount_id: libc::c_int = 0;
        // SAFETY: `raw` has the layout of `struct file_handle` with
        // MAX_HANDLE_SZ bytes of room, announced in handle_bytes.
        cvt(unsafe {
            libc::name_to_handle_at(
                fd.as_raw_fd(),
                c"".as_ptr(),
                (&mut raw as *mut RawHandle).cast(),
                &mut mount_id,
                libc::AT_EMPTY_PATH,
            )
        })?;
        let n = (raw.handle_bytes as usize).min(MAX_HANDLE_SZ);
        Ok((
            FileHandle {
                handle_type: raw.handle_type,
                bytes: raw.f_handle[..n].to_vec(),
            },
            mount_id,
        ))
    }

    /// Opens the handle on the filesystem of `mount_fd`.
    pub fn open(&self, mount_fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
        let mut raw = RawHandle {
            handle_bytes: self.bytes.len() as u32,
            handle_type: self.handle_type,
            f_handle: [0; MAX_HANDLE_SZ],
        };
        raw.f_handle[..self.bytes.len()].copy_from_slice(&self.bytes);
        // SAFETY: `raw` is a valid `struct file_handle` as built above.
        let fd = cvt(unsafe {
            libc::open_by_handle_at(
                mount_fd.as_raw_fd(),
                (&mut raw as *mut RawHandle).cast(),
                flags | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: freshly returned fd, owned by us.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Runs a create operation with the caller's fsuid/fsgid so new files
/// belong to the guest user. Only effective when the daemon runs as root;
/// the credentials are per thread and restored on drop.
pub struct Creds {
    changed: bool,
}

impl Creds {
    /// Switches this thread's fsuid/fsgid to `uid`/`gid`.
    pub fn switch(uid: u32, gid: u32) -> io::Result<Creds> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || (uid == 0 && gid == 0) {
            return Ok(Creds { changed: false });
        }
        // SAFETY: setfsgid/setfsuid only change this thread's credentials.
        unsafe {
            libc::setfsgid(gid);
            libc::setfsuid(uid);
        }
        // setfsuid reports the previous value, never an error: check it took.
        // SAFETY: as above; -1 is an invalid id that only queries.
        let now = unsafe { libc::setfsuid(u32::MAX) } as u32;
        if now != uid {
            drop(Creds { changed: true });
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(Creds { changed: true })
    }
}

impl Drop for Creds {
    fn drop(&mut self) {
        if self.changed {
            // SAFETY: restoring root's fs credentials on this thread.
            unsafe {
                libc::setfsuid(0);
                libc::setfsgid(0);
            }
        }
    }
}
