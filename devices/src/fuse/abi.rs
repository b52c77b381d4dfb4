//! The FUSE wire ABI (`linux/fuse.h`, protocol 7.38): opcodes, flags and
//! the fixed-size structures, each with an explicit little-endian layout so
//! decoding never depends on host struct layout or alignment.

/// Major protocol version we speak.
pub const KERNEL_VERSION: u32 = 7;
/// Highest minor version we speak (Linux 6.2; a 6.1 guest sends 37).
pub const KERNEL_MINOR_VERSION: u32 = 38;
/// Inode number of the root directory.
pub const ROOT_ID: u64 = 1;

/// A fixed-size wire structure.
pub trait Wire: Sized {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Decodes from exactly `Self::SIZE` bytes (callers check the length).
    fn decode(b: &[u8]) -> Self;
    /// Appends the encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);
}

/// Little-endian field codec used by [`wire!`].
pub trait Field: Sized + Copy {
    /// Width in bytes.
    const WIDTH: usize;
    /// Reads from the start of `b` (at least `WIDTH` bytes).
    fn get(b: &[u8]) -> Self;
    /// Appends to `out`.
    fn put(self, out: &mut Vec<u8>);
}

macro_rules! field {
    ($t:ty, $n:expr) => {
        impl Field for $t {
            const WIDTH: usize = $n;
            fn get(b: &[u8]) -> Self {
                let mut a = [0u8; $n];
                a.copy_from_slice(&b[..$n]);
                <$t>::from_le_bytes(a)
            }
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
field!(u16, 2);
field!(u32, 4);
field!(i32, 4);
field!(u64, 8);

impl Field for [u32; 6] {
    const WIDTH: usize = 24;
    fn get(b: &[u8]) -> Self {
        let mut a = [0u32; 6];
        for (i, v) in a.iter_mut().enumerate() {
            *v = u32::get(&b[i * 4..]);
        }
        a
    }
    fn put(self, out: &mut Vec<u8>) {
        for v in self {
            v.put(out);
        }
    }
}

/// Defines a wire struct whose layout is its fields in order, packed (every
/// FUSE struct is naturally aligned, so packed equals the C layout).
macro_rules! wire {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        ///
        /// Fields are named and ordered as in `linux/fuse.h`.
        #[allow(missing_docs)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
        impl Wire for $name {
            const SIZE: usize = 0 $(+ <$t as Field>::WIDTH)*;
            #[allow(unused_assignments)]
            fn decode(b: &[u8]) -> Self {
                let mut at = 0usize;
                $(let $f = <$t as Field>::get(&b[at..]); at += <$t as Field>::WIDTH;)*
                $name { $($f),* }
            }
            fn encode(&self, out: &mut Vec<u8>) {
                $(Field::put(self.$f, out);)*
            }
        }
    };
}

wire! {
    /// Header of every request.
    pub struct InHeader { pub len: u32, pub opcode: u32, pub unique: u64, pub nodeid: u64,
        pub uid: u32, pub gid: u32, pub pid: u32, pub total_extlen: u16, pub padding: u16 }
}
wire! {
    /// Header of every reply.
    pub struct OutHeader { pub len: u32, pub error: i32, pub unique: u64 }
}
wire! {
    /// File attributes.
    pub struct Attr { pub ino: u64, pub size: u64, pub blocks: u64, pub atime: u64, pub mtime: u64,
        pub ctime: u64, pub atimensec: u32, pub mtimensec: u32, pub ctimensec: u32, pub mode: u32,
        pub nlink: u32, pub uid: u32, pub gid: u32, pub rdev: u32, pub blksize: u32, pub flags: u32 }
}
wire! {
    /// Reply to LOOKUP and the creating operations (followed by nothing;
    /// `attr` is encoded separately after it).
    pub struct EntryOutHead { pub nodeid: u64, pub generation: u64, pub entry_valid: u64,
        pub attr_valid: u64, pub entry_valid_nsec: u32, pub attr_valid_nsec: u32 }
}
wire! {
    /// FORGET.
    pub struct ForgetIn { pub nlookup: u64 }
}
wire! {
    /// One BATCH_FORGET item.
    pub struct ForgetOne { pub nodeid: u64, pub nlookup: u64 }
}
wire! {
    /// BATCH_FORGET header.
    pub struct BatchForgetIn { pub count: u32, pub dummy: u32 }
}
wire! {
    /// GETATTR.
    pub struct GetattrIn { pub getattr_flags: u32, pub dummy: u32, pub fh: u64 }
}
wire! {
    /// Reply to GETATTR/SETATTR (attr follows).
    pub struct AttrOutHead { pub attr_valid: u64, pub attr_valid_nsec: u32, pub dummy: u32 }
}
wire! {
    /// MKNOD (name follows).
    pub struct MknodIn { pub mode: u32, pub rdev: u32, pub umask: u32, pub padding: u32 }
}
wire! {
    /// MKDIR (name follows).
    pub struct MkdirIn { pub mode: u32, pub umask: u32 }
}
wire! {
    /// RENAME (old and new names follow).
    pub struct RenameIn { pub newdir: u64 }
}
wire! {
    /// RENAME2 (old and new names follow).
    pub struct Rename2In { pub newdir: u64, pub flags: u32, pub padding: u32 }
}
wire! {
    /// LINK (new name follows).
    pub struct LinkIn { pub oldnodeid: u64 }
}
wire! {
    /// SETATTR.
    pub struct SetattrIn { pub valid: u32, pub padding: u32, pub fh: u64, pub size: u64,
        pub lock_owner: u64, pub atime: u64, pub mtime: u64, pub ctime: u64, pub atimensec: u32,
        pub mtimensec: u32, pub ctimensec: u32, pub mode: u32, pub unused4: u32, pub uid: u32,
        pub gid: u32, pub unused5: u32 }
}
wire! {
    /// OPEN and OPENDIR.
    pub struct OpenIn { pub flags: u32, pub open_flags: u32 }
}
wire! {
    /// CREATE and TMPFILE (name follows).
    pub struct CreateIn { pub flags: u32, pub mode: u32, pub umask: u32, pub open_flags: u32 }
}
wire! {
    /// Reply to OPEN, OPENDIR, CREATE.
    pub struct OpenOut { pub fh: u64, pub open_flags: u32, pub padding: u32 }
}
wire! {
    /// RELEASE and RELEASEDIR.
    pub struct ReleaseIn { pub fh: u64, pub flags: u32, pub release_flags: u32, pub lock_owner: u64 }
}
wire! {
    /// FLUSH.
    pub struct FlushIn { pub fh: u64, pub unused: u32, pub padding: u32, pub lock_owner: u64 }
}
wire! {
    /// READ, READDIR, READDIRPLUS.
    pub struct ReadIn { pub fh: u64, pub offset: u64, pub size: u32, pub read_flags: u32,
        pub lock_owner: u64, pub flags: u32, pub padding: u32 }
}
wire! {
    /// WRITE (data follows).
    pub struct WriteIn { pub fh: u64, pub offset: u64, pub size: u32, pub write_flags: u32,
        pub lock_owner: u64, pub flags: u32, pub padding: u32 }
}
wire! {
    /// Reply to WRITE and COPY_FILE_RANGE.
    pub struct WriteOut { pub size: u32, pub padding: u32 }
}
wire! {
    /// Reply to STATFS.
    pub struct StatfsOut { pub blocks: u64, pub bfree: u64, pub bavail: u64, pub files: u64,
        pub ffree: u64, pub bsize: u32, pub namelen: u32, pub frsize: u32, pub padding: u32,
        pub spare: [u32; 6] }
}
wire! {
    /// FSYNC and FSYNCDIR.
    pub struct FsyncIn { pub fh: u64, pub fsync_flags: u32, pub padding: u32 }
}
wire! {
    /// SETXATTR without FUSE_SETXATTR_EXT (name and value follow).
    pub struct SetxattrIn { pub size: u32, pub flags: u32 }
}
wire! {
    /// GETXATTR and LISTXATTR.
    pub struct GetxattrIn { pub size: u32, pub padding: u32 }
}
wire! {
    /// Reply to a size probe of GETXATTR/LISTXATTR.
    pub struct GetxattrOut { pub size: u32, pub padding: u32 }
}
wire! {
    /// ACCESS.
    pub struct AccessIn { pub mask: u32, pub padding: u32 }
}
wire! {
    /// The part of INIT every protocol minor sends.
    pub struct InitInHead { pub major: u32, pub minor: u32, pub max_readahead: u32, pub flags: u32 }
}
wire! {
    /// Reply to INIT (protocol 7.36+ layout, 64 bytes).
    pub struct InitOut { pub major: u32, pub minor: u32, pub max_readahead: u32, pub flags: u32,
        pub max_background: u16, pub congestion_threshold: u16, pub max_write: u32,
        pub time_gran: u32, pub max_pages: u16, pub map_alignment: u16, pub flags2: u32,
        pub unused: [u32; 6], pub unused2: u32 }
}
wire! {
    /// INTERRUPT.
    pub struct InterruptIn { pub unique: u64 }
}
wire! {
    /// FALLOCATE.
    pub struct FallocateIn { pub fh: u64, pub offset: u64, pub length: u64, pub mode: u32,
        pub padding: u32 }
}
wire! {
    /// LSEEK.
    pub struct LseekIn { pub fh: u64, pub offset: u64, pub whence: u32, pub padding: u32 }
}
wire! {
    /// Reply to LSEEK.
    pub struct LseekOut { pub offset: u64 }
}
wire! {
    /// COPY_FILE_RANGE.
    pub struct CopyFileRangeIn { pub fh_in: u64, pub off_in: u64, pub nodeid_out: u64,
        pub fh_out: u64, pub off_out: u64, pub len: u64, pub flags: u64 }
}
wire! {
    /// Directory entry header (name follows, padded to 8 bytes).
    pub struct DirentHead { pub ino: u64, pub off: u64, pub namelen: u32, pub typ: u32 }
}

/// FUSE opcodes.
#[allow(missing_docs)]
pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const GETLK: u32 = 31;
    pub const SETLK: u32 = 32;
    pub const SETLKW: u32 = 33;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const BMAP: u32 = 37;
    pub const DESTROY: u32 = 38;
    pub const IOCTL: u32 = 39;
    pub const POLL: u32 = 40;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
    pub const SYNCFS: u32 = 50;
    pub const TMPFILE: u32 = 51;
}

/// INIT flags (`flags` is bits 0..32, `flags2` bits 32..64).
#[allow(missing_docs)]
pub mod init {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const ATOMIC_O_TRUNC: u64 = 1 << 3;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const DONT_MASK: u64 = 1 << 6;
    pub const AUTO_INVAL_DATA: u64 = 1 << 12;
    pub const DO_READDIRPLUS: u64 = 1 << 13;
    pub const READDIRPLUS_AUTO: u64 = 1 << 14;
    pub const ASYNC_DIO: u64 = 1 << 15;
    pub const WRITEBACK_CACHE: u64 = 1 << 16;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const POSIX_ACL: u64 = 1 << 20;
    pub const ABORT_ERROR: u64 = 1 << 21;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const CACHE_SYMLINKS: u64 = 1 << 23;
    pub const EXPLICIT_INVAL_DATA: u64 = 1 << 25;
    pub const SETXATTR_EXT: u64 = 1 << 29;
    pub const INIT_EXT: u64 = 1 << 30;
}

/// FOPEN_* reply flags.
#[allow(missing_docs)]
pub mod fopen {
    pub const DIRECT_IO: u32 = 1 << 0;
    pub const KEEP_CACHE: u32 = 1 << 1;
    pub const CACHE_DIR: u32 = 1 << 3;
}

/// SETATTR `valid` bits.
#[allow(missing_docs)]
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
    pub const CTIME: u32 = 1 << 10;
}

/// GETATTR flag: `fh` is valid.
pub const GETATTR_FH: u32 = 1;
/// FSYNC flag: data only.
pub const FSYNC_FDATASYNC: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_linux_fuse_h() {
        assert_eq!(InHeader::SIZE, 40);
        assert_eq!(OutHeader::SIZE, 16);
        assert_eq!(Attr::SIZE, 88);
        assert_eq!(EntryOutHead::SIZE + Attr::SIZE, 128);
        assert_eq!(AttrOutHead::SIZE + Attr::SIZE, 104);
        assert_eq!(SetattrIn::SIZE, 88);
        assert_eq!(ReadIn::SIZE, 40);
        assert_eq!(WriteIn::SIZE, 40);
        assert_eq!(StatfsOut::SIZE, 80);
        assert_eq!(InitOut::SIZE, 64);
        assert_eq!(CopyFileRangeIn::SIZE, 56);
        assert_eq!(ReleaseIn::SIZE, 24);
        assert_eq!(FallocateIn::SIZE, 32);
        assert_eq!(DirentHead::SIZE, 24);
    }

    #[test]
    fn round_trip_is_little_endian() {
        let h = OutHeader {
            len: 0x0102_0304,
            error: -2,
            unique: 7,
        };
        let mut v = Vec::new();
        h.encode(&mut v);
        assert_eq!(&v[..4], &[4, 3, 2, 1]);
        assert_eq!(OutHeader::decode(&v), h);
    }
}
