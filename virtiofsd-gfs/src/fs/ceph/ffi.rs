//! Hand-written bindings for the part of libcephfs the backend uses: the
//! mount lifecycle and the low-level `ceph_ll_*` inode API
//! (`cephfs/libcephfs.h`, `cephfs/ceph_ll_client.h`). Every function
//! returns a negative errno on failure; [`check`] turns that into an
//! [`std::io::Error`].
//!
//! The library is opened at run time ([`load`]), not linked: a daemon
//! serving a host directory then maps no Ceph code at all (libcephfs and
//! libceph-common are about 14 MiB of file pages), and the binary builds
//! without `libcephfs-dev`. Every symbol is resolved once into [`Api`], so
//! a missing one fails the start, not a request.
#![allow(non_camel_case_types, missing_docs)]

use std::ffi::{c_char, c_int, c_uint, c_void, OsString};
use std::io;
use std::sync::Mutex;

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};

/// `struct ceph_mount_info`: one client of the cluster.
#[repr(C)]
pub struct ceph_mount_info {
    _p: [u8; 0],
}
/// `struct Inode`: a client-side inode reference.
#[repr(C)]
pub struct Inode {
    _p: [u8; 0],
}
/// `struct Fh`: an open file.
#[repr(C)]
pub struct Fh {
    _p: [u8; 0],
}
/// `struct ceph_dir_result`: an open directory stream.
#[repr(C)]
pub struct ceph_dir_result {
    _p: [u8; 0],
}
/// `struct UserPerm`: the credentials a call is made with.
#[repr(C)]
pub struct UserPerm {
    _p: [u8; 0],
}

/// `struct ceph_statx`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ceph_statx {
    pub stx_mask: u32,
    pub stx_blksize: u32,
    pub stx_nlink: u32,
    pub stx_uid: u32,
    pub stx_gid: u32,
    pub stx_mode: u16,
    pub stx_ino: u64,
    pub stx_size: u64,
    pub stx_blocks: u64,
    pub stx_dev: u64,
    pub stx_rdev: u64,
    pub stx_atime: Timespec,
    pub stx_ctime: Timespec,
    pub stx_mtime: Timespec,
    pub stx_btime: Timespec,
    pub stx_version: u64,
}

/// `struct timespec` with a `Default`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Timespec {
    pub tv_sec: i64,
    pub tv_nsec: i64,
}

pub const CEPH_STATX_BASIC_STATS: c_uint = 0x7ff;
pub const AT_SYMLINK_NOFOLLOW: c_uint = 0x100;

pub const CEPH_SETATTR_MODE: c_int = 1 << 0;
pub const CEPH_SETATTR_UID: c_int = 1 << 1;
pub const CEPH_SETATTR_GID: c_int = 1 << 2;
pub const CEPH_SETATTR_MTIME: c_int = 1 << 3;
pub const CEPH_SETATTR_ATIME: c_int = 1 << 4;
pub const CEPH_SETATTR_SIZE: c_int = 1 << 5;

/// The library [`load`] opens unless [`LIBRARY_ENV`] names another.
pub const SONAME: &str = "libcephfs.so.2";

/// Environment variable naming the library to open instead of
/// [`SONAME`] (a soname or a path). Meant for tests of the
/// missing-library error and for a libcephfs outside the linker's path.
pub const LIBRARY_ENV: &str = "VIRTIOFSD_GFS_LIBCEPHFS";

/// Why libcephfs could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The library or one of its own dependencies could not be opened.
    #[error("{name} not found: install libcephfs2 ({reason})")]
    Open {
        /// What was opened.
        name: String,
        /// The dynamic loader's message.
        reason: String,
    },
    /// The library lacks a function the backend calls.
    #[error("{name} has no {symbol}: install libcephfs2 from Ceph 16 or later")]
    Symbol {
        /// What was opened.
        name: String,
        /// The missing function.
        symbol: &'static str,
    },
}

/// Declares [`Api`]: one typed function pointer per C prototype, resolved
/// by [`Api::resolve`], and a same-named `unsafe` method calling it.
macro_rules! library {
    ($( fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty; )*) => {
        /// Every libcephfs function the backend calls, resolved once.
        pub struct Api {
            $( $name: unsafe extern "C" fn($($ty),*) -> $ret, )*
            /// Keeps the code the pointers point into mapped.
            _lib: Library,
        }

        impl Api {
            /// Looks up every function in `lib`.
            fn resolve(lib: Library, name: &str) -> Result<Api, LoadError> {
                $(
                    // SAFETY: the pointer type is the function's C
                    // prototype in libcephfs.h, and it is only called
                    // while `_lib` keeps the library mapped.
                    let $name = unsafe {
                        *lib.get::<unsafe extern "C" fn($($ty),*) -> $ret>(
                            concat!(stringify!($name), "\0").as_bytes(),
                        )
                        .map_err(|_| LoadError::Symbol {
                            name: name.to_string(),
                            symbol: stringify!($name),
                        })?
                    };
                )*
                Ok(Api { $($name,)* _lib: lib })
            }

            $(
                #[doc = concat!("Calls `", stringify!($name), "`.")]
                ///
                /// # Safety
                /// The C function's contract (valid mount, pointers, strings).
                #[allow(clippy::too_many_arguments)]
                pub unsafe fn $name(&self, $($arg: $ty),*) -> $ret {
                    // SAFETY: the caller upholds the C contract; the
                    // pointer has that prototype (see `resolve`).
                    unsafe { (self.$name)($($arg),*) }
                }
            )*
        }
    };
}

/// The table, once opened: shared by every mount of the process.
static API: Mutex<Option<&'static Api>> = Mutex::new(None);

/// Opens libcephfs ([`SONAME`], or what [`LIBRARY_ENV`] names) and
/// resolves every function, or returns the table opened before. Must run
/// before the sandbox takes the filesystem away. The library is never
/// closed: Ceph's C++ runtime does not expect to be unloaded.
pub fn load() -> Result<&'static Api, LoadError> {
    let mut api = API.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(api) = *api {
        return Ok(api);
    }
    let name = std::env::var_os(LIBRARY_ENV).unwrap_or_else(|| OsString::from(SONAME));
    let shown = name.to_string_lossy().into_owned();
    // SAFETY: opening libcephfs runs its and libceph-common's static
    // initialisers, which only set up process-local state. RTLD_NOW
    // binds every reference now, so nothing is missing mid-request;
    // RTLD_GLOBAL gives the plugins Ceph opens itself (compressors,
    // crypto) libceph-common's symbols, as linking did: they do not list
    // it as a dependency.
    let lib = unsafe { Library::open(Some(&name), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| {
        LoadError::Open {
            name: shown.clone(),
            reason: e.to_string(),
        }
    })?;
    let table: &'static Api = Box::leak(Box::new(Api::resolve(lib, &shown)?));
    *api = Some(table);
    Ok(table)
}

library! {
    fn ceph_create(cmount: *mut *mut ceph_mount_info, id: *const c_char) -> c_int;
    fn ceph_conf_set(
        cmount: *mut ceph_mount_info,
        option: *const c_char,
        value: *const c_char,
    ) -> c_int;
    fn ceph_init(cmount: *mut ceph_mount_info) -> c_int;
    fn ceph_select_filesystem(cmount: *mut ceph_mount_info, fs_name: *const c_char) -> c_int;
    fn ceph_mount(cmount: *mut ceph_mount_info, root: *const c_char) -> c_int;
    fn ceph_unmount(cmount: *mut ceph_mount_info) -> c_int;
    fn ceph_release(cmount: *mut ceph_mount_info) -> c_int;
    fn ceph_sync_fs(cmount: *mut ceph_mount_info) -> c_int;

    fn ceph_userperm_new(uid: u32, gid: u32, ngids: c_int, gids: *mut u32) -> *mut UserPerm;
    fn ceph_userperm_destroy(perm: *mut UserPerm) -> ();

    fn ceph_ll_lookup_root(cmount: *mut ceph_mount_info, out: *mut *mut Inode) -> c_int;
    fn ceph_ll_lookup(
        cmount: *mut ceph_mount_info,
        parent: *mut Inode,
        name: *const c_char,
        out: *mut *mut Inode,
        stx: *mut ceph_statx,
        want: c_uint,
        flags: c_uint,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_put(cmount: *mut ceph_mount_info, inode: *mut Inode) -> c_int;
    fn ceph_ll_getattr(
        cmount: *mut ceph_mount_info,
        inode: *mut Inode,
        stx: *mut ceph_statx,
        want: c_uint,
        flags: c_uint,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_setattr(
        cmount: *mut ceph_mount_info,
        inode: *mut Inode,
        stx: *mut ceph_statx,
        mask: c_int,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_open(
        cmount: *mut ceph_mount_info,
        inode: *mut Inode,
        flags: c_int,
        fh: *mut *mut Fh,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_create(
        cmount: *mut ceph_mount_info,
        parent: *mut Inode,
        name: *const c_char,
        mode: u32,
        oflags: c_int,
        out: *mut *mut Inode,
        fh: *mut *mut Fh,
        stx: *mut ceph_statx,
        want: c_uint,
        flags: c_uint,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_read(
        cmount: *mut ceph_mount_info,
        fh: *mut Fh,
        off: i64,
        len: u64,
        buf: *mut c_char,
    ) -> c_int;
    fn ceph_ll_write(
        cmount: *mut ceph_mount_info,
        fh: *mut Fh,
        off: i64,
        len: u64,
        data: *const c_char,
    ) -> c_int;
    fn ceph_ll_fsync(cmount: *mut ceph_mount_info, fh: *mut Fh, dataonly: c_int) -> c_int;
    fn ceph_ll_fallocate(
        cmount: *mut ceph_mount_info,
        fh: *mut Fh,
        mode: c_int,
        offset: i64,
        length: i64,
    ) -> c_int;
    fn ceph_ll_lseek(cmount: *mut ceph_mount_info, fh: *mut Fh, off: i64, whence: c_int)
        -> i64;
    fn ceph_ll_sync_inode(
        cmount: *mut ceph_mount_info,
        inode: *mut Inode,
        dataonly: c_int,
    ) -> c_int;
    fn ceph_ll_close(cmount: *mut ceph_mount_info, fh: *mut Fh) -> c_int;
    fn ceph_ll_mknod(
        cmount: *mut ceph_mount_info,
        parent: *mut Inode,
        name: *const c_char,
        mode: u32,
        rdev: u64,
        out: *mut *mut Inode,
        stx: *mut ceph_statx,
        want: c_uint,
        flags: c_uint,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_mkdir(
        cmount: *mut ceph_mount_info,
        parent: *mut Inode,
        name: *const c_char,
        mode: u32,
        out: *mut *mut Inode,
        stx: *mut ceph_statx,
        want: c_uint,
        flags: c_uint,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_symlink(
        cmount: *mut ceph_mount_info,
        parent: *mut Inode,
        name: *const c_char,
        target: *const c_char,
        out: *mut *mut Inode,
        stx: *mut ceph_statx,
        want: c_uint,
        flags: c_uint,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_readlink(
        cmount: *mut ceph_mount_info,
        inode: *mut Inode,
        buf: *mut c_char,
        size: usize,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_link(
        cmount: *mut ceph_mount_info,
        inode: *mut Inode,
        newparent: *mut Inode,
        name: *const c_char,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_unlink(
        cmount: *mut ceph_mount_info,
        parent: *mut Inode,
        name: *const c_char,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_rmdir(
        cmount: *mut ceph_mount_info,
        parent: *mut Inode,
        name: *const c_char,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_rename(
        cmount: *mut ceph_mount_info,
        parent: *mut Inode,
        name: *const c_char,
        newparent: *mut Inode,
        newname: *const c_char,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_opendir(
        cmount: *mut ceph_mount_info,
        inode: *mut Inode,
        dir: *mut *mut ceph_dir_result,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_releasedir(cmount: *mut ceph_mount_info, dir: *mut ceph_dir_result) -> c_int;
    fn ceph_readdir_r(
        cmount: *mut ceph_mount_info,
        dir: *mut ceph_dir_result,
        de: *mut libc::dirent,
    ) -> c_int;
    fn ceph_telldir(cmount: *mut ceph_mount_info, dir: *mut ceph_dir_result) -> i64;
    fn ceph_seekdir(cmount: *mut ceph_mount_info, dir: *mut ceph_dir_result, off: i64) -> ();
    fn ceph_ll_statfs(
        cmount: *mut ceph_mount_info,
        inode: *mut Inode,
        buf: *mut libc::statvfs,
    ) -> c_int;
    fn ceph_ll_getxattr(
        cmount: *mut ceph_mount_info,
        inode: *mut Inode,
        name: *const c_char,
        value: *mut c_void,
        size: usize,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_setxattr(
        cmount: *mut ceph_mount_info,
        inode: *mut Inode,
        name: *const c_char,
        value: *const c_void,
        size: usize,
        flags: c_int,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_listxattr(
        cmount: *mut ceph_mount_info,
        inode: *mut Inode,
        list: *mut c_char,
        size: usize,
        out_size: *mut usize,
        perms: *const UserPerm,
    ) -> c_int;
    fn ceph_ll_removexattr(
        cmount: *mut ceph_mount_info,
        inode: *mut Inode,
        name: *const c_char,
        perms: *const UserPerm,
    ) -> c_int;
}

/// libcephfs reports errors as negative Linux errnos; anything out of the
/// errno range (never expected) becomes EIO rather than a bogus code.
pub fn errno(ret: i64) -> io::Error {
    let e = -ret;
    if (1..4096).contains(&e) {
        io::Error::from_raw_os_error(e as i32)
    } else {
        io::Error::from_raw_os_error(libc::EIO)
    }
}

/// `ret` if non-negative, else the errno it carries.
pub fn check(ret: c_int) -> io::Result<u32> {
    if ret < 0 {
        Err(errno(i64::from(ret)))
    } else {
        Ok(ret as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statx_layout_matches_the_header() {
        // What the C compiler says for the installed header (64-bit).
        assert_eq!(std::mem::size_of::<ceph_statx>(), 136);
        assert_eq!(std::mem::offset_of!(ceph_statx, stx_ino), 24);
        assert_eq!(std::mem::offset_of!(ceph_statx, stx_atime), 64);
    }

    /// Ceph's plugins take libceph-common's symbols from the global
    /// scope: with the library opened RTLD_LOCAL, this one fails with
    /// "undefined symbol: ceph_arch_intel_pclmul".
    #[test]
    fn ceph_plugins_bind_to_the_loaded_library() {
        load().unwrap();
        let plugin = "/usr/lib/x86_64-linux-gnu/ceph/compressor/libceph_zlib.so";
        // SAFETY: the plugin's initialisers only register itself.
        unsafe { Library::open(Some(plugin), RTLD_NOW | libloading::os::unix::RTLD_LOCAL) }
            .unwrap();
    }

    #[test]
    fn negative_returns_map_to_errnos() {
        assert_eq!(
            check(-libc::ENOENT).unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        assert_eq!(check(-5000).unwrap_err().raw_os_error(), Some(libc::EIO));
        assert_eq!(check(7).unwrap(), 7);
    }
}
