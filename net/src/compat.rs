//! A relay between the frontend and the vhost-user library that papers
//! over one ordering difference.
//!
//! QEMU's vhost-user netdev sends `VHOST_USER_SET_VRING_ENABLE` as soon
//! as it has connected (virtio-net attaches/detaches its queue pairs at
//! realize), long before `VHOST_USER_SET_FEATURES`. rust-vmm's vhost
//! 0.18 treats that as use of a feature not yet acked and drops the
//! connection, so QEMU could never use the daemon. The relay forwards
//! every message unchanged (with its file descriptors) except such early
//! enable requests that expect no reply: those are held back and the
//! latest state of each ring is replayed right after `SET_FEATURES`
//! (QEMU 7.2 does not send the enables again when it starts the device).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::thread;

use vhost::vhost_user::Listener;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

const HDR: usize = 12;
const SET_FEATURES: u32 = 2;
const SET_VRING_ENABLE: u32 = 18;
const NEED_REPLY: u32 = 0x8;
/// Largest payload we relay (the spec's messages are far smaller; the
/// library enforces its own, tighter limits).
const MAX_PAYLOAD: usize = 64 * 1024;
/// Most fds one message carries (memory regions).
const MAX_FDS: usize = 32;

/// Moves the daemon into a network namespace of its own, empty and
/// unreachable by name, so the relay's private abstract socket can only
/// be reached from inside the daemon (abstract UNIX sockets carry no
/// permissions; they are scoped by network namespace). The tap queues, the
/// listening socket and the readiness socket are already open and keep
/// working. Call while single-threaded, before dropping capabilities
/// (needs CAP_SYS_ADMIN). Returns false, with a warning logged, when the
/// kernel refuses.
pub fn isolate_netns() -> bool {
    // SAFETY: unshare takes no pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
        return true;
    }
    tracing::warn!(
        error = %io::Error::last_os_error(),
        "cannot enter a private network namespace: the relay socket is reachable by other processes in this one"
    );
    false
}

/// Starts relaying connections accepted on `public` to a private
/// listener (an abstract socket) and returns that listener for the
/// library to serve. Call [`isolate_netns`] first.
pub fn relay(public: Listener) -> io::Result<Listener> {
    let name = format!("net-tap-relay-{}-{}", std::process::id(), random_u64());
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let private = UnixListener::bind_addr(&addr)?;
    thread::Builder::new()
        .name("vhost-relay".into())
        .spawn(move || loop {
            match public.accept() {
                Ok(Some(front)) => {
                    if let Err(e) = start_pair(front, &addr) {
                        tracing::warn!(error = %e, "relay: cannot reach the backend");
                    }
                }
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "relay: accept failed");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        })?;
    Ok(Listener::from(private))
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into `b`.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    u64::from_le_bytes(b)
}

fn start_pair(front: UnixStream, addr: &SocketAddr) -> io::Result<()> {
    let back = UnixStream::connect_addr(addr)?;
    let (f2, b2) = (front.try_clone()?, back.try_clone()?);
    thread::Builder::new()
        .name("vhost-relay-req".into())
        .spawn(move || {
            if let Err(e) = requests(&front, &back) {
                tracing::debug!(error = %e, "relay: request stream ended");
            }
            let _ = back.shutdown(std::net::Shutdown::Both);
            let _ = front.shutdown(std::net::Shutdown::Both);
        })?;
    thread::Builder::new()
        .name("vhost-relay-rep".into())
        .spawn(move || {
            // Replies carry no fds for the features this daemon offers.
            let _ = io::copy(&mut &b2, &mut &f2);
            let _ = f2.shutdown(std::net::Shutdown::Both);
            let _ = b2.shutdown(std::net::Shutdown::Both);
        })?;
    Ok(())
}

/// Frontend → backend: whole messages, fds included.
fn requests(front: &UnixStream, back: &UnixStream) -> io::Result<()> {
    let mut features_seen = false;
    let mut deferred: Vec<Vec<u8>> = Vec::new();
    let mut msg = vec![0u8; HDR + MAX_PAYLOAD];
    loop {
        let mut fds: Vec<File> = Vec::new();
        let mut got = 0;
        while got < HDR {
            let mut raw = [-1 as RawFd; MAX_FDS];
            let mut iov = [libc::iovec {
                iov_base: msg[got..HDR].as_mut_ptr().cast(),
                iov_len: HDR - got,
            }];
            // SAFETY: the iovec points into `msg`, which we own and may
            // overwrite; `raw` has room for MAX_FDS descriptors.
            let (n, nfds) = unsafe { front.recv_with_fds(&mut iov, &mut raw) }
                .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
            for &fd in &raw[..nfds] {
                // SAFETY: recvmsg just gave us ownership of these fds.
                fds.push(unsafe { File::from_raw_fd(fd) });
            }
            if n == 0 {
                return Ok(());
            }
            got += n;
        }
        let word = |m: &[u8], i: usize| u32::from_le_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]);
        let (code, flags, size) = (word(&msg, 0), word(&msg, 4), word(&msg, 8) as usize);
        if size > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message {code} with a {size}-byte payload"),
            ));
        }
        (&*front).read_exact(&mut msg[HDR..HDR + size])?;
        tracing::trace!(
            code,
            flags,
            size,
            fds = fds.len(),
            "relay: frontend message"
        );
        if code == SET_FEATURES {
            features_seen = true;
        }
        if code == SET_VRING_ENABLE && !features_seen && flags & NEED_REPLY == 0 && size == 8 {
            // Keep the latest state per ring; it is replayed after SET_FEATURES.
            let index = word(&msg, HDR);
            deferred.retain(|m: &Vec<u8>| word(m, HDR) != index);
            deferred.push(msg[..HDR + size].to_vec());
            tracing::debug!(
                index,
                "relay: deferred SET_VRING_ENABLE sent before SET_FEATURES"
            );
            continue;
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let data: &[u8] = &msg[..HDR + size];
        if raw.is_empty() {
            (&*back).write_all(data)?;
        } else {
            let n = back
                .send_with_fds(&[data], &raw)
                .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
            (&*back).write_all(&data[n..])?;
        }
        if code == SET_FEATURES {
            for m in deferred.drain(..) {
                (&*back).write_all(&m)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(code: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(code.to_le_bytes());
        m.extend(flags.to_le_bytes());
        m.extend((payload.len() as u32).to_le_bytes());
        m.extend(payload);
        m
    }

    #[test]
    fn defers_early_replyless_enables_and_passes_fds() {
        let (front_peer, front) = UnixStream::pair().unwrap();
        let (back, back_peer) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || requests(&front, &back));
        let enable = msg(SET_VRING_ENABLE, 1, &[0; 8]);
        let enable_reply = msg(SET_VRING_ENABLE, 1 | NEED_REPLY, &[1; 8]);
        let features = msg(SET_FEATURES, 1, &[7; 8]);
        let call = msg(13, 1, &[0; 8]);
        (&front_peer).write_all(&enable).unwrap();
        (&front_peer).write_all(&enable_reply).unwrap();
        let ev = File::open("/dev/null").unwrap();
        front_peer
            .send_with_fds(&[&call[..]], &[ev.as_raw_fd()])
            .unwrap();
        (&front_peer).write_all(&features).unwrap();
        (&front_peer).write_all(&enable).unwrap();
        let early_disable = msg(SET_VRING_ENABLE, 1, &[0; 8]);
        drop(front_peer);
        let mut buf = vec![0u8; enable_reply.len()];
        (&back_peer).read_exact(&mut buf).unwrap();
        assert_eq!(buf, enable_reply, "reply-wanting enable forwarded");
        let mut raw = [-1; 4];
        let mut hb = vec![0u8; call.len()];
        let mut iov = [libc::iovec {
            iov_base: hb.as_mut_ptr().cast(),
            iov_len: hb.len(),
        }];
        // SAFETY: iov points into hb.
        let (n, nfds) = unsafe { back_peer.recv_with_fds(&mut iov, &mut raw) }.unwrap();
        assert_eq!((n, nfds), (call.len(), 1));
        assert_eq!(hb, call);
        // SAFETY: we own the received fd.
        drop(unsafe { File::from_raw_fd(raw[0]) });
        let mut rest = Vec::new();
        (&back_peer).read_to_end(&mut rest).unwrap();
        // The early enable of ring 0 is replayed after SET_FEATURES.
        assert_eq!(rest, [features, enable.clone(), enable].concat());
        let _ = early_disable;
        t.join().unwrap().unwrap();
    }
}
