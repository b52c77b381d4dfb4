//! `docker cp`: `HEAD|GET|PUT /containers/{id}/archive`, through the
//! chrooted `__archive` helper (see [`crate::archive`]).

use super::http::{self, error, Query, Req, Resp};
use crate::archive::{PathStat, EXIT_NOT_DIR, EXIT_NOT_FOUND};
use crate::container::Container;
use crate::logs::Stream;
use crate::reaper;
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

const STAT_HEADER: &str = "x-docker-container-path-stat";

fn helper(c: &Container, op: &str, path: &str) -> Command {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("cradle-init")
        .arg("__archive")
        .arg(op)
        .arg(&c.rootfs)
        .arg(path);
    cmd
}

fn failure(c: &Container, path: &str, code: i32, stderr: &[u8]) -> Resp {
    let msg = String::from_utf8_lossy(stderr).trim().to_string();
    match code {
        EXIT_NOT_FOUND => error(
            StatusCode::NOT_FOUND,
            &format!("Could not find the file {path} in container {}", c.name()),
        ),
        EXIT_NOT_DIR => error(
            StatusCode::BAD_REQUEST,
            &format!("extraction point is not a directory: {msg}"),
        ),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, &msg),
    }
}

fn path_param(req: &Req) -> Result<String, Resp> {
    match Query::of(req).get("path") {
        Some(p) if !p.is_empty() => Ok(p.to_string()),
        _ => Err(error(StatusCode::BAD_REQUEST, "path parameter is required")),
    }
}

/// Stats `path`; the response header on success, the error otherwise.
async fn stat_header(c: &Container, path: &str) -> Result<String, Resp> {
    let out = reaper::output(&mut helper(c, "stat", path), None)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    if out.code != 0 {
        return Err(failure(c, path, out.code, &out.stderr));
    }
    // Round-trip through the type so only Docker's fields go out.
    let stat: PathStat = serde_json::from_slice(&out.stdout)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    let json = serde_json::to_vec(&stat)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(json))
}

fn with_stat(mut r: Resp, stat: &str) -> Resp {
    if let Ok(v) = stat.parse() {
        r.headers_mut().insert(STAT_HEADER, v);
    }
    r
}

pub async fn head(c: &Container, req: &Req) -> Resp {
    let path = match path_param(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match stat_header(c, &path).await {
        Ok(s) => with_stat(http::empty(StatusCode::OK), &s),
        Err(r) => r,
    }
}

pub async fn get(c: &Container, req: &Req) -> Resp {
    let path = match path_param(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let stat = match stat_header(c, &path).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut cmd = helper(c, "get", &path);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let child = match reaper::spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let Some(stdout) = child.stdout else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "archive helper has no stdout",
        );
    };
    let mut rx = crate::spawn::pump(Stream::Stdout, std::fs::File::from(OwnedFd::from(stdout)));
    let (resp, tx) = http::streaming(StatusCode::OK, "application/x-tar");
    tokio::spawn(async move {
        while let Some((_, chunk)) = rx.recv().await {
            if tx.send(Bytes::from(chunk)).await.is_err() {
                break;
            }
        }
        let _ = child.exit.await;
    });
    with_stat(resp, &stat)
}

pub async fn put(c: &Container, req: Req) -> Resp {
    let path = match path_param(&req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut cmd = helper(c, "put", &path);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = match reaper::spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let (Some(stdin), Some(stderr)) = (child.stdin, child.stderr) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "archive helper has no stdio",
        );
    };
    let mut errors = crate::spawn::pump(Stream::Stderr, std::fs::File::from(OwnedFd::from(stderr)));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let writer = std::thread::spawn(move || {
        let mut stdin = stdin;
        while let Some(chunk) = rx.blocking_recv() {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut body = req.into_body();
    let mut read_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    if tx.send(data).await.is_err() {
                        break;
                    }
                }
            }
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    let mut stderr = Vec::new();
    while let Some((_, chunk)) = errors.recv().await {
        stderr.extend_from_slice(&chunk);
    }
    let code = child.exit.await.unwrap_or(255);
    if let Some(e) = read_error {
        return error(StatusCode::BAD_REQUEST, &format!("reading archive: {e}"));
    }
    if code != 0 {
        return failure(c, &path, code, &stderr);
    }
    http::empty(StatusCode::OK)
}
