//! Writer for the "newc" cpio format, the one the Linux kernel unpacks as an
//! initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).

use std::io::{self, Write};

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Magic of the newc format (no checksum).
const NEWC_MAGIC: &[u8] = b"070701";
/// Fixed header size: magic plus 13 eight-digit hex fields.
const HEADER_LEN: usize = 6 + 13 * 8;
/// Name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";

/// Streams newc entries to any writer. Entries are written in call order; the
/// kernel creates them in that order, so parents must come before children.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// Adds a directory with permission bits `perm`.
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])
    }

    /// Adds a regular file holding `data`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Adds a character device node (e.g. `/dev/console`, needed before
    /// devtmpfs is mounted so `/init` has a stdout).
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer entry and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry(TRAILER, 0, 1, (0, 0), &[])?;
        // Pad the archive to a 512-byte multiple like GNU cpio does; the
        // kernel skips zero padding between concatenated archives.
        let pad = (512 - (self.written % 512)) % 512;
        self.out.write_all(&vec![0u8; pad as usize])?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Writes one entry; `rdev` is the (major, minor) of a device node.
    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        let name = if name.is_empty() { "." } else { name };
        if name.as_bytes().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cpio entry name contains NUL",
            ));
        }
        let filesize = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "cpio entry larger than 4 GiB")
        })?;
        // namesize counts the terminating NUL.
        let namesize = name.len() + 1;
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let fields: [u32; 13] = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            filesize,
            0,
            0,
            rdev.0,
            rdev.1,
            namesize as u32,
            0,
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + namesize + 3);
        header.extend_from_slice(NEWC_MAGIC);
        for f in fields {
            header.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        // Header plus name is padded to a multiple of four.
        header.resize(header.len().next_multiple_of(4), 0);
        self.out.write_all(&header)?;
        self.out.write_all(data)?;
        let data_pad = data.len().next_multiple_of(4) - data.len();
        self.out.write_all(&[0u8; 3][..data_pad])?;
        self.written += (header.len() + data.len() + data_pad) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/bin", 0o755).unwrap();
        w.file("/bin/hello", 0o755, b"#!/bin/sh\necho hi\n")
            .unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        w.dir("/dev", 0o755).unwrap();
        w.char_device("/dev/console", 0o600, 5, 1).unwrap();
        w.file("/odd", 0o644, b"x").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn entries_are_aligned_and_archive_is_padded() {
        let bytes = sample();
        assert_eq!(bytes.len() % 512, 0);
        assert_eq!(&bytes[..6], NEWC_MAGIC);
        // The first header's name starts at 110 and "bin\0" ends at 114, so
        // the next field (data: none for a dir) starts aligned at 116.
        let second = &bytes[116..122];
        assert_eq!(second, NEWC_MAGIC);
    }

    #[test]
    fn gnu_cpio_lists_and_extracts_what_was_written() {
        let bytes = sample();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("cpio")
            .args(["-idv", "--no-absolute-filenames", "--quiet"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cpio (GNU) must be installed");
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8_lossy(&out.stderr);
        for name in ["bin", "bin/hello", "bin/sh", "odd"] {
            assert!(
                listed.lines().any(|l| l == name),
                "{name} missing from {listed}"
            );
        }
        let hello = std::fs::read(dir.path().join("bin/hello")).unwrap();
        assert_eq!(hello, b"#!/bin/sh\necho hi\n");
        let target = std::fs::read_link(dir.path().join("bin/sh")).unwrap();
        assert_eq!(target.to_str(), Some("busybox"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("bin/hello"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn names_with_nul_are_rejected() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("/a\0b", 0o644, b"").is_err());
    }
}
