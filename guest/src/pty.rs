//! Pseudo-terminals allocated in the container's own devpts instance, so
//! `tty` and `ttyname` inside the container name a `/dev/pts/N` that exists
//! there (a host pty would be "not a tty" to them), and the passing of a
//! pty master between processes over a unix socket (`SCM_RIGHTS`), the way
//! runc's console socket works.

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Opens a new pty through the `ptmx` at `ptmx` and returns
/// (master, slave), both close-on-exec.
pub fn open(ptmx: &Path) -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::unix::fs::OpenOptionsExt;
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(ptmx)?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int we own.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: TIOCGPTPEER returns a new fd (or -1) and touches no memory.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the ioctl just returned this fd to us.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// Sends `fd` over the unix socket `sock`.
pub fn send_fd(sock: RawFd, fd: RawFd) -> nix::Result<()> {
    let fds = [fd];
    sendmsg::<()>(
        sock,
        &[IoSlice::new(b"p")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(|_| ())
}

/// Receives one fd from the unix socket `sock` (None when the peer closed
/// without sending).
pub fn recv_fd(sock: RawFd) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            let mut it = fds.into_iter();
            let first = it.next()?;
            for extra in it {
                // SAFETY: fds received in this message are ours to close.
                drop(unsafe { OwnedFd::from_raw_fd(extra) });
            }
            // SAFETY: as above; the kernel installed this fd for us.
            return Some(unsafe { OwnedFd::from_raw_fd(first) });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_master_travels_over_a_socket() {
        let (master, slave) = open(Path::new("/dev/ptmx")).unwrap();
        // SAFETY: isatty on an fd we own.
        assert_eq!(unsafe { libc::isatty(slave.as_raw_fd()) }, 1);
        let (a, b) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        send_fd(a.as_raw_fd(), master.as_raw_fd()).unwrap();
        let got = recv_fd(b.as_raw_fd()).unwrap();
        // Writing to the slave is readable on the received master.
        nix::unistd::write(&slave, b"x").unwrap();
        let mut buf = [0u8; 8];
        let n = nix::unistd::read(got.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"x");
        drop(a);
        assert!(recv_fd(b.as_raw_fd()).is_none());
    }
}
