//! systemd readiness notification (`sd_notify(3)` protocol), without
//! linking libsystemd.
//!
//! Call [`init`] before entering the sandbox: it connects to
//! `$NOTIFY_SOCKET` while the path is still reachable; later messages go
//! through that connection.

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

static SOCKET: OnceLock<Option<UnixDatagram>> = OnceLock::new();

fn connect() -> std::io::Result<Option<UnixDatagram>> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(None);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.connect_addr(&addr)?;
    } else {
        sock.connect(&path)?;
    }
    Ok(Some(sock))
}

/// Connects to `$NOTIFY_SOCKET` if set. Returns whether it is set.
pub fn init() -> std::io::Result<bool> {
    if let Some(s) = SOCKET.get() {
        return Ok(s.is_some());
    }
    let s = connect()?;
    let set = s.is_some();
    let _ = SOCKET.set(s);
    Ok(set)
}

/// Sends `READY=1` if `$NOTIFY_SOCKET` is set. Returns whether a message
/// was sent. Call it only once the socket is listening.
pub fn ready() -> std::io::Result<bool> {
    send("READY=1")
}

/// Sends `STOPPING=1` (before draining on SIGTERM).
pub fn stopping() -> std::io::Result<bool> {
    send("STOPPING=1")
}

/// Sends an arbitrary state string.
pub fn send(state: &str) -> std::io::Result<bool> {
    init()?;
    match SOCKET.get() {
        Some(Some(sock)) => {
            sock.send(state.as_bytes())?;
            Ok(true)
        }
        _ => Ok(false),
    }
}
