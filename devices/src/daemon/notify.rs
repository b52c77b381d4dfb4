//! systemd readiness notification (`sd_notify(3)` protocol), without
//! linking libsystemd.

use std::os::unix::net::UnixDatagram;

/// Sends `READY=1` to `$NOTIFY_SOCKET` if set. Returns whether a message
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
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}
