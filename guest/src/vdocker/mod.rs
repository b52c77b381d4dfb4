//! vdocker: the subset of the Docker Engine API that lets the docker CLI
//! (`ps`, `inspect`, `logs`, `exec`, `cp`, `attach`, `kill`, `wait`) drive a
//! pod. Paths are accepted with and without the `/v1.NN` prefix; anything
//! else gets Docker's JSON error shape `{"message": ...}` with a 404.

// Handlers return a finished error response as their `Err`: it is built
// once per failed request, so its size does not matter.
#![allow(clippy::result_large_err)]

mod api;
mod cp;
mod http;
mod streams;

use crate::pod::Pod;
use http::{error, Req, Resp};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The API version vdocker speaks (clients negotiate down to it).
pub const API_VERSION: &str = "1.43";
/// The oldest API version it accepts in a path prefix.
pub const MIN_API_VERSION: &str = "1.24";

/// Serves vdocker on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, pod: Arc<Pod>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("vdocker accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let pod = pod.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let pod = pod.clone();
                async move { Ok::<_, std::convert::Infallible>(route(pod, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, "vdocker connection: {e}");
            }
        });
    }
}

/// Strips a `/v1.NN` prefix.
fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let v = &rest[..end];
        let is_version = v.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        });
        if is_version {
            return &rest[end..];
        }
    }
    path
}

async fn route(pod: Arc<Pod>, req: Req) -> Resp {
    let method = req.method().clone();
    let full = req.uri().path().to_string();
    let path = strip_version(&full).to_string();
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut resp = match (&method, seg.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => api::ping(),
        (&Method::GET, ["version"]) => api::version(),
        (&Method::GET, ["info"]) => api::info(&pod),
        (&Method::GET, ["containers", "json"]) => api::list(&pod, &req),
        (_, ["containers", id, rest @ ..]) => match pod.find(id) {
            None => error(StatusCode::NOT_FOUND, &format!("No such container: {id}")),
            Some(c) => match (&method, rest) {
                (&Method::GET, ["json"]) => api::inspect(&pod, &c),
                (&Method::GET, ["logs"]) => streams::logs(c, &req),
                (&Method::POST, ["attach"]) => streams::attach(c, req),
                (&Method::POST, ["kill"]) => api::kill(&c, &req),
                (&Method::POST, ["wait"]) => api::wait(c, &req),
                (&Method::POST, ["resize"]) => api::resize_container(&c, &req),
                (&Method::POST, ["exec"]) => api::exec_create(&pod, c, req).await,
                (&Method::HEAD, ["archive"]) => cp::head(&c, &req).await,
                (&Method::GET, ["archive"]) => cp::get(&c, &req).await,
                (&Method::PUT, ["archive"]) => cp::put(&c, req).await,
                _ => not_found(&method, &full),
            },
        },
        (_, ["exec", id, rest @ ..]) => {
            let exec = pod
                .execs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(*id)
                .cloned();
            match exec {
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("No such exec instance: {id}"),
                ),
                Some(e) => match (&method, rest) {
                    (&Method::POST, ["start"]) => streams::exec_start(e, req).await,
                    (&Method::GET, ["json"]) => api::exec_inspect(&e),
                    (&Method::POST, ["resize"]) => api::resize_exec(&e, &req),
                    _ => not_found(&method, &full),
                },
            }
        }
        _ => not_found(&method, &full),
    };
    http::add_server_headers(&mut resp);
    resp
}

fn not_found(method: &Method, path: &str) -> Resp {
    error(
        StatusCode::NOT_FOUND,
        &format!("page not found: vdocker does not implement {method} {path}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefix() {
        assert_eq!(strip_version("/v1.43/containers/json"), "/containers/json");
        assert_eq!(strip_version("/v1.5/_ping"), "/_ping");
        assert_eq!(strip_version("/_ping"), "/_ping");
        assert_eq!(strip_version("/version"), "/version");
        assert_eq!(strip_version("/v1/x"), "/v1/x");
    }
}
