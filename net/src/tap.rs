//! The host side: a multi-queue tap device with a virtio-net header on
//! every frame (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE`),
//! one file descriptor per queue pair.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

/// Errors opening or configuring a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name is empty, too long or contains a NUL.
    #[error("invalid tap name '{0}' (1..=15 bytes, no NUL or '/')")]
    BadName(String),
    /// `/dev/net/tun` could not be opened.
    #[error("open /dev/net/tun: {0}")]
    OpenTun(io::Error),
    /// `TUNSETIFF` refused the name or flags (an existing tap without
    /// `multi_queue`/`vnet_hdr`, a non-tap interface of that name, no
    /// CAP_NET_ADMIN...).
    #[error("attach tap '{name}' queue {queue}: {source}")]
    SetIff {
        /// interface name
        name: String,
        /// queue index being opened
        queue: usize,
        /// cause
        source: io::Error,
    },
    /// An inherited fd is not a usable tap queue.
    #[error("fd {fd}: {reason}")]
    BadFd {
        /// the fd
        fd: RawFd,
        /// what is wrong with it
        reason: String,
    },
    /// A tap ioctl failed.
    #[error("tap '{name}': {what}: {source}")]
    Ioctl {
        /// interface name
        name: String,
        /// the request that failed
        what: &'static str,
        /// cause
        source: io::Error,
    },
}

/// Offloads the guest can receive, as `TUNSETOFFLOAD` flags. The tap only
/// hands us partially checksummed or GSO frames the guest said it accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxOffloads {
    /// `VIRTIO_NET_F_GUEST_CSUM`
    pub csum: bool,
    /// `VIRTIO_NET_F_GUEST_TSO4`
    pub tso4: bool,
    /// `VIRTIO_NET_F_GUEST_TSO6`
    pub tso6: bool,
    /// `VIRTIO_NET_F_GUEST_ECN`
    pub ecn: bool,
}

impl RxOffloads {
    fn tun_flags(self) -> libc::c_uint {
        let mut f = 0;
        if self.csum {
            f |= libc::TUN_F_CSUM;
            // GSO without checksum offload is meaningless to the kernel.
            if self.tso4 {
                f |= libc::TUN_F_TSO4;
            }
            if self.tso6 {
                f |= libc::TUN_F_TSO6;
            }
            if (self.tso4 || self.tso6) && self.ecn {
                f |= libc::TUN_F_TSO_ECN;
            }
        }
        f
    }
}

/// One queue of the tap: a non-blocking fd that reads and writes whole
/// frames preceded by a virtio-net header.
#[derive(Debug)]
pub struct TapQueue {
    file: File,
    name: String,
    /// Whether the queue is attached; the lock orders attach/detach
    /// requests from the pair's worker and the control queue's.
    attached: Mutex<bool>,
}

// The ifreq layout TUNSETIFF/TUNGETIFF use: name then a short of flags.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ifreq(name: &str) -> IfReqFlags {
    let mut r = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    r.name[..name.len()].copy_from_slice(name.as_bytes());
    r
}

/// Checks an interface name the way the kernel will (`dev_valid_name`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace())
}

/// Whether an interface of that name exists in the current network namespace.
pub fn interface_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

impl TapQueue {
    /// Opens (creating the interface if needed) one queue of tap `name`.
    pub fn open(name: &str, queue: usize) -> Result<TapQueue, TapError> {
        if !valid_name(name) {
            return Err(TapError::BadName(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = ifreq(name);
        req.flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE)
            as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes an ifreq; `req` is one, laid out
        // as the kernel expects, and lives across the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if r < 0 {
            return Err(TapError::SetIff {
                name: name.to_string(),
                queue,
                source: io::Error::last_os_error(),
            });
        }
        Ok(TapQueue {
            file,
            name: name.to_string(),
            attached: Mutex::new(true),
        })
    }

    /// Adopts a tap queue fd opened by a supervisor. It must be a tap
    /// (not tun) with `IFF_VNET_HDR` and `IFF_NO_PI`; it is made non-blocking.
    pub fn from_fd(fd: OwnedFd) -> Result<TapQueue, TapError> {
        let raw = fd.as_raw_fd();
        let file = File::from(fd);
        let mut req = ifreq("");
        // SAFETY: TUNGETIFF writes an ifreq into `req`, which is large enough.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNGETIFF, &mut req) };
        if r < 0 {
            return Err(TapError::BadFd {
                fd: raw,
                reason: format!("not a tap queue: {}", io::Error::last_os_error()),
            });
        }
        let flags = libc::c_int::from(req.flags);
        if flags & libc::IFF_TAP == 0 {
            return Err(TapError::BadFd {
                fd: raw,
                reason: "a tun, not a tap".into(),
            });
        }
        if flags & libc::IFF_VNET_HDR == 0 || flags & libc::IFF_NO_PI == 0 {
            return Err(TapError::BadFd {
                fd: raw,
                reason: "tap lacks IFF_VNET_HDR or IFF_NO_PI".into(),
            });
        }
        let end = req
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(req.name.len());
        let name = String::from_utf8_lossy(&req.name[..end]).into_owned();
        // SAFETY: F_GETFL/F_SETFL on an fd we own; no pointers involved.
        let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        // SAFETY: as above.
        if fl < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
            return Err(TapError::BadFd {
                fd: raw,
                reason: format!("cannot make non-blocking: {}", io::Error::last_os_error()),
            });
        }
        Ok(TapQueue {
            file,
            name,
            attached: Mutex::new(true),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn ioctl_int(
        &self,
        what: &'static str,
        req: libc::Ioctl,
        val: libc::c_int,
    ) -> Result<(), TapError> {
        let v = val;
        // SAFETY: these tun ioctls read one int through the pointer, which
        // points at `v`, alive across the call.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), req, &v) };
        if r < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Sets the size of the virtio-net header the tap puts before each
    /// frame (10 for legacy without mergeable buffers, else 12).
    pub fn set_vnet_hdr_size(&self, size: usize) -> Result<(), TapError> {
        let v = libc::c_int::try_from(size).unwrap_or(12);
        self.ioctl_int("TUNSETVNETHDRSZ", libc::TUNSETVNETHDRSZ, v)
    }

    /// Tells the kernel which offloaded frames we can take (`TUNSETOFFLOAD`).
    /// `TUNSETOFFLOAD` takes its argument by value, not by pointer.
    pub fn set_offloads(&self, off: RxOffloads) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes an unsigned long by value; no memory is passed.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(off.tun_flags()),
            )
        };
        if r < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what: "TUNSETOFFLOAD",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Attaches or detaches this queue (`TUNSETQUEUE`): the kernel steers
    /// frames only to attached queues, so a queue pair the guest does not
    /// use must be detached or its share of the traffic is lost.
    pub fn set_attached(&self, on: bool) -> Result<(), TapError> {
        let mut attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        if *attached == on {
            return Ok(());
        }
        let mut req = ifreq("");
        req.flags = if on {
            libc::IFF_ATTACH_QUEUE
        } else {
            libc::IFF_DETACH_QUEUE
        } as libc::c_short;
        // SAFETY: TUNSETQUEUE reads an ifreq through the pointer to `req`.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETQUEUE, &mut req) };
        if r < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what: "TUNSETQUEUE",
                source: io::Error::last_os_error(),
            });
        }
        *attached = on;
        Ok(())
    }

    /// Whether the queue is currently attached.
    pub fn attached(&self) -> bool {
        *self.attached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads one frame (header included) into `iovs`. Returns the frame's
    /// length; `WouldBlock` when the tap queue is empty.
    pub fn readv(&self, iovs: &[libc::iovec]) -> io::Result<usize> {
        let cnt = libc::c_int::try_from(iovs.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: every iovec was built from a live, writable buffer (guest
        // memory held by the caller's memory guard, or the caller's bounce
        // buffer); the kernel writes at most iov_len bytes into each.
        let r = unsafe { libc::readv(self.file.as_raw_fd(), iovs.as_ptr(), cnt) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// Writes one frame (header included) gathered from `iovs`.
    pub fn writev(&self, iovs: &[libc::iovec]) -> io::Result<usize> {
        let cnt = libc::c_int::try_from(iovs.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: every iovec points at live, readable memory the caller
        // holds (guest memory under its memory guard); the kernel only reads.
        let r = unsafe { libc::writev(self.file.as_raw_fd(), iovs.as_ptr(), cnt) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// All queues of one tap, and whether this daemon created it.
///
/// A tap the daemon created is not persistent: the kernel removes it when
/// the last queue fd closes, i.e. when the daemon exits. An existing tap
/// the daemon attached to is never made persistent or non-persistent by
/// us, so it stays as its owner set it up.
#[derive(Debug)]
pub struct Tap {
    /// One queue per queue pair.
    pub queues: Vec<TapQueue>,
    /// The daemon created the interface.
    pub created: bool,
}

impl Tap {
    /// Opens `pairs` queues of tap `name`, creating it if it does not exist.
    /// A created tap gets `mtu` and is brought up; an existing one is left
    /// as configured.
    pub fn open(name: &str, pairs: usize, mtu: u16) -> Result<Tap, TapError> {
        if !valid_name(name) {
            return Err(TapError::BadName(name.to_string()));
        }
        let created = !interface_exists(name);
        let queues = (0..pairs)
            .map(|q| TapQueue::open(name, q))
            .collect::<Result<Vec<_>, _>>()?;
        if created {
            set_mtu_and_up(name, mtu)?;
        }
        Ok(Tap { queues, created })
    }

    /// Adopts tap queue fds from a supervisor, one per queue pair; all must
    /// belong to the same interface.
    pub fn from_fds(fds: Vec<OwnedFd>) -> Result<Tap, TapError> {
        let queues = fds
            .into_iter()
            .map(TapQueue::from_fd)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(first) = queues.first() {
            if let Some(other) = queues.iter().find(|q| q.name != first.name) {
                return Err(TapError::BadFd {
                    fd: other.as_raw_fd(),
                    reason: format!("belongs to '{}', not '{}'", other.name, first.name),
                });
            }
        }
        Ok(Tap {
            queues,
            created: false,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        self.queues.first().map(|q| q.name()).unwrap_or("")
    }
}

/// Takes ownership of an inherited fd number, checking that it is open.
pub fn adopt_fd(fd: RawFd) -> Result<OwnedFd, TapError> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(TapError::BadFd {
            fd,
            reason: "not an open file descriptor".into(),
        });
    }
    // SAFETY: the supervisor passed us this open fd to own; nothing else in
    // the process uses it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
struct IfReqInt {
    name: [u8; libc::IFNAMSIZ],
    val: libc::c_int,
    _pad: [u8; 20],
}

fn set_mtu_and_up(name: &str, mtu: u16) -> Result<(), TapError> {
    let err = |what: &'static str| TapError::Ioctl {
        name: name.to_string(),
        what,
        source: io::Error::last_os_error(),
    };
    // SAFETY: plain socket(2) call; the fd is wrapped in OwnedFd right away.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(err("socket"));
    }
    // SAFETY: `s` is a fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    let mut req = IfReqInt {
        name: [0; libc::IFNAMSIZ],
        val: libc::c_int::from(mtu),
        _pad: [0; 20],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: SIOCSIFMTU reads an ifreq (name + int) from `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &mut req) } < 0 {
        return Err(err("SIOCSIFMTU"));
    }
    let mut fl = ifreq(name);
    // SAFETY: SIOCGIFFLAGS writes the flags short into `fl`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut fl) } < 0 {
        return Err(err("SIOCGIFFLAGS"));
    }
    fl.flags |= libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq in `fl`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut fl) } < 0 {
        return Err(err("SIOCSIFFLAGS"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_the_kernel() {
        assert!(valid_name("tap0"));
        assert!(valid_name("abcdefghijklmno"));
        assert!(!valid_name("abcdefghijklmnop"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(".."));
        assert!(!valid_name("a b"));
    }

    #[test]
    fn offload_flags_need_csum_for_gso() {
        let o = RxOffloads {
            csum: false,
            tso4: true,
            tso6: true,
            ecn: true,
        };
        assert_eq!(o.tun_flags(), 0);
        let o = RxOffloads {
            csum: true,
            tso4: true,
            tso6: false,
            ecn: false,
        };
        assert_eq!(o.tun_flags(), libc::TUN_F_CSUM | libc::TUN_F_TSO4);
    }

    #[test]
    fn adopting_a_closed_fd_fails() {
        assert!(adopt_fd(987_654).is_err());
        assert!(adopt_fd(-1).is_err());
    }
}
