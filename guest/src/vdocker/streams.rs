//! The streaming endpoints: logs (chunked), attach and exec start
//! (hijacked connections). Non-tty output uses Docker's 8-byte stream
//! framing; tty output is raw.

use super::http::{self, error, Query, Req, Resp};
use crate::container::{Container, Status};
use crate::exec::Exec;
use crate::logs::{frame, timestamp, Entry, Stream};
use bytes::Bytes;
use hyper::{header, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast::error::RecvError;

fn content_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

fn encode(tty: bool, timestamps: bool, e: &Entry) -> Bytes {
    let mut data = Vec::with_capacity(e.data.len() + 40);
    if timestamps {
        data.extend_from_slice(timestamp(&e.time).as_bytes());
        data.push(b' ');
    }
    data.extend_from_slice(&e.data);
    if tty {
        Bytes::from(data)
    } else {
        Bytes::from(frame(e.stream as u8, &data))
    }
}

/// Which entries a reader wants.
#[derive(Clone, Copy)]
struct Selection {
    stdout: bool,
    stderr: bool,
    since: Option<chrono::DateTime<chrono::Utc>>,
}

impl Selection {
    fn wants(&self, e: &Entry) -> bool {
        let stream = match e.stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        stream && self.since.is_none_or(|s| e.time >= s)
    }
}

/// Docker's `since`: Unix seconds with an optional fraction.
fn parse_since(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let secs: i64 = secs.parse().ok()?;
    if secs == 0 && frac.trim_start_matches('0').is_empty() {
        return None;
    }
    let frac = format!("{frac:0<9}");
    let nanos: u32 = frac.get(..9)?.parse().ok()?;
    chrono::DateTime::from_timestamp(secs, nanos)
}

pub fn logs(c: Arc<Container>, req: &Req) -> Resp {
    let q = Query::of(req);
    let sel = Selection {
        stdout: q.flag("stdout", false),
        stderr: q.flag("stderr", false),
        since: q.get("since").and_then(parse_since),
    };
    if !sel.stdout && !sel.stderr {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad parameters: you must choose at least one stream",
        );
    }
    let tail = match q.get("tail").unwrap_or("all") {
        "all" | "" => None,
        n => match n.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => return error(StatusCode::BAD_REQUEST, &format!("invalid tail: {n:?}")),
        },
    };
    let follow = q.flag("follow", false);
    let timestamps = q.flag("timestamps", false);
    let tty = c.config.process.tty;
    let mut watch = c.watch();
    let sub = c.logs.subscribe();
    let (resp, tx) = http::streaming(StatusCode::OK, content_type(tty));
    tokio::spawn(async move {
        let mut backlog: Vec<_> = sub.backlog.into_iter().filter(|e| sel.wants(e)).collect();
        if let Some(n) = tail {
            let skip = backlog.len().saturating_sub(n);
            backlog.drain(..skip);
        }
        for e in backlog {
            if tx.send(encode(tty, timestamps, &e)).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut live = sub.live;
        let ended = |c: &Container| c.state().status == Status::Exited;
        let mut done = ended(&c);
        loop {
            tokio::select! {
                r = live.recv() => match r {
                    Ok(e) => {
                        if sel.wants(&e) && tx.send(encode(tty, timestamps, &e)).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                },
                r = watch.changed(), if !done => {
                    done = r.is_err() || ended(&c);
                }
                _ = tx.closed() => return,
                // Once exited, everything it wrote is already in the
                // channel: stop when it runs dry.
                _ = std::future::ready(()), if done && live.is_empty() => return,
            }
        }
    });
    resp
}

/// Answers 101 and runs `f` on the hijacked connection.
fn hijack<F, Fut>(req: &mut Req, tty: bool, f: F) -> Resp
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    if !req.headers().contains_key(header::UPGRADE) {
        return error(
            StatusCode::BAD_REQUEST,
            "this endpoint needs a hijacked connection (Connection: Upgrade, Upgrade: tcp)",
        );
    }
    let on = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on.await {
            Ok(up) => f(TokioIo::new(up)).await,
            Err(e) => tracing::debug!("upgrade failed: {e}"),
        }
    });
    hijack_response(tty)
}

/// Copies the client's input into a process's stdin, closing it at EOF.
async fn feed_stdin(mut rd: impl AsyncRead + Unpin, stdin: Arc<Mutex<std::fs::File>>, close: bool) {
    let mut buf = vec![0u8; 16384];
    let mut stdin = Some(stdin);
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Some(f) = stdin.clone() else { break };
        let chunk = buf[..n].to_vec();
        let ok = tokio::task::spawn_blocking(move || {
            f.lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(&chunk)
                .is_ok()
        })
        .await
        .unwrap_or(false);
        if !ok {
            stdin = None;
        }
    }
    if close {
        drop(stdin);
    }
}

pub fn attach(c: Arc<Container>, mut req: Req) -> Resp {
    let q = Query::of(&req);
    let want_stdin = q.flag("stdin", false);
    let sel = Selection {
        stdout: q.flag("stdout", false),
        stderr: q.flag("stderr", false),
        since: None,
    };
    let replay = q.flag("logs", false);
    let stream = q.flag("stream", false);
    let tty = c.config.process.tty;
    let sub = c.logs.subscribe();
    let mut watch = c.watch();
    hijack(&mut req, tty, move |io| async move {
        let (rd, mut wr) = tokio::io::split(io);
        if want_stdin {
            if let Some(stdin) = c.stdin() {
                // Docker keeps the container's stdin open when an attach
                // ends (StdinOnce is not supported).
                tokio::spawn(feed_stdin(rd, stdin, false));
            }
        }
        if replay {
            for e in sub.backlog.iter().filter(|e| sel.wants(e)) {
                if wr.write_all(&encode(tty, false, e)).await.is_err() {
                    return;
                }
            }
        }
        if stream {
            let mut live = sub.live;
            let mut done = c.state().status == Status::Exited;
            loop {
                tokio::select! {
                    r = live.recv() => match r {
                        Ok(e) => {
                            if sel.wants(&e) && wr.write_all(&encode(tty, false, &e)).await.is_err() {
                                return;
                            }
                        }
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => break,
                    },
                    r = watch.changed(), if !done => {
                        done = r.is_err() || c.state().status == Status::Exited;
                    }
                    _ = std::future::ready(()), if done && live.is_empty() => break,
                }
            }
        }
        let _ = wr.shutdown().await;
    })
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct StartConfig {
    detach: bool,
    console_size: Option<[u16; 2]>,
}

pub async fn exec_start(e: Arc<Exec>, mut req: Req) -> Resp {
    if !req.headers().contains_key(header::UPGRADE) {
        return error(
            StatusCode::BAD_REQUEST,
            "this endpoint needs a hijacked connection (Connection: Upgrade, Upgrade: tcp)",
        );
    }
    let on = hyper::upgrade::on(&mut req);
    let body = match http::body_bytes(req, 1 << 16).await {
        Ok(b) => b,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    let cfg: StartConfig = if body.is_empty() {
        StartConfig::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(err) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid exec start config: {err}"),
                )
            }
        }
    };
    if let Some([h, w]) = cfg.console_size {
        let _ = e.resize(h, w);
    }
    let io = match e.start().await {
        Ok(io) => io,
        Err(m) => return error(StatusCode::CONFLICT, &m),
    };
    let tty = e.config.tty;
    let mut outputs = tokio::sync::mpsc::channel::<(Stream, Vec<u8>)>(64);
    for (stream, file) in io.outputs {
        let mut rx = crate::spawn::pump(stream, file);
        let tx = outputs.0.clone();
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(outputs.0);
    if cfg.detach {
        tokio::spawn(async move { while outputs.1.recv().await.is_some() {} });
        return http::empty(StatusCode::OK);
    }
    let stdin = io.stdin.map(|f| Arc::new(Mutex::new(f)));
    let mut exit = io.exit;
    let (want_out, want_err) = (e.config.attach_stdout, e.config.attach_stderr);
    tokio::spawn(async move {
        let up = match on.await {
            Ok(up) => TokioIo::new(up),
            Err(err) => {
                tracing::debug!("exec upgrade failed: {err}");
                while outputs.1.recv().await.is_some() {}
                return;
            }
        };
        let (rd, mut wr) = tokio::io::split(up);
        match stdin {
            Some(s) => {
                tokio::spawn(feed_stdin(rd, s, true));
            }
            None => drop(rd),
        }
        let mut client_gone = false;
        while let Some((stream, data)) = outputs.1.recv().await {
            let wanted = match stream {
                Stream::Stdout => want_out,
                Stream::Stderr => want_err,
            };
            if client_gone || !wanted {
                continue;
            }
            let bytes = if tty {
                data
            } else {
                frame(stream as u8, &data)
            };
            if wr.write_all(&bytes).await.is_err() {
                client_gone = true;
            }
        }
        // The client asks for the exit code as soon as the stream ends.
        let _ = exit.wait_for(|c| c.is_some()).await;
        let _ = wr.shutdown().await;
    });
    hijack_response(tty)
}

fn hijack_response(tty: bool) -> Resp {
    let mut r = Response::new(http::full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(header::UPGRADE, header::HeaderValue::from_static("tcp"));
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type(tty)),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_parsing() {
        assert_eq!(parse_since("0"), None);
        assert_eq!(parse_since("0.000000000"), None);
        let t = parse_since("1700000000.5").unwrap();
        assert_eq!(
            (t.timestamp(), t.timestamp_subsec_nanos()),
            (1_700_000_000, 500_000_000)
        );
        assert_eq!(parse_since("x"), None);
    }
}
