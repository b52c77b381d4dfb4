//! `DIR/docker.sock`: a Unix socket whose every connection is spliced to
//! vdocker (TCP port 1 on the pod's address).
//!
//! The proxy copies bytes both ways without parsing HTTP, so hijacked
//! connections (`attach`, `exec` with a stream) work as they are; a
//! half-close on one side is passed on as a half-close on the other, which
//! is how the docker CLI says "stdin ended".

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running proxy; dropping it stops accepting and removes the socket.
pub struct DockerProxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn splice(mut from: impl io::Read, to: &dyn Fn(&[u8]) -> io::Result<()>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn serve(client: UnixStream, target: SocketAddr) {
    use std::io::Write;
    let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        let mut c = client;
        // Read the request head first, so the client is not cut off while
        // still writing it and gets to read the answer.
        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
            match io::Read::read(&mut c, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let body = r#"{"message":"the pod's vdocker is not reachable"}"#;
        let _ = write!(
            c,
            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    };
    let _ = upstream.set_nodelay(true);
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        splice(&c2, &|b| (&u2).write_all(b));
        let _ = u2.shutdown(Shutdown::Write);
    });
    splice(&upstream, &|b| (&client).write_all(b));
    let _ = client.shutdown(Shutdown::Write);
    let _ = up.join();
}

impl DockerProxy {
    /// Listens on `path` (replacing a stale socket file) and forwards to
    /// `target`.
    pub fn start(path: &Path, target: SocketAddr) -> io::Result<Self> {
        if path.symlink_metadata().is_ok() {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("docker-proxy".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(c) = conn {
                        let _ = std::thread::Builder::new()
                            .name("docker-conn".into())
                            .spawn(move || serve(c, target));
                    }
                }
            })?;
        Ok(DockerProxy {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn splices_both_ways_with_half_close() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        // Upstream: reads until EOF, then answers with what it got reversed.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got.reverse();
            s.write_all(&got).unwrap();
        });
        let proxy = DockerProxy::start(&sock, addr).unwrap();
        let mut c = UnixStream::connect(&sock).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert_eq!(back, "olleh");
        drop(proxy);
        assert!(!sock.exists());
    }

    #[test]
    fn unreachable_pod_gets_a_docker_shaped_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let _proxy = DockerProxy::start(&sock, free).unwrap();
        let mut c = UnixStream::connect(&sock).unwrap();
        c.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert!(back.starts_with("HTTP/1.1 502"), "{back}");
        assert!(back.contains(r#""message""#));
    }
}
