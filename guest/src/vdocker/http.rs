//! HTTP plumbing: body types, JSON and error responses, query parsing.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{header, Request, Response, StatusCode};
use tokio::sync::mpsc;

/// Incoming request.
pub type Req = Request<Incoming>;
/// Outgoing response.
pub type Resp = Response<BoxBody<Bytes, std::io::Error>>;

/// A complete body.
pub fn full(data: impl Into<Bytes>) -> BoxBody<Bytes, std::io::Error> {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A response with status and a complete body of the given type.
pub fn respond(status: StatusCode, content_type: &str, data: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(full(data));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    respond(status, "application/json", format!("{value}\n"))
}

/// Docker's error shape.
pub fn error(status: StatusCode, message: &str) -> Resp {
    json(status, &serde_json::json!({ "message": message }))
}

/// An empty response.
pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// A streamed response whose chunks are sent on the returned sender; the
/// headers go out at once.
pub fn streaming(status: StatusCode, content_type: &str) -> (Resp, mpsc::Sender<Bytes>) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    (r, tx)
}

/// Headers the Docker daemon puts on every response.
pub fn add_server_headers(r: &mut Resp) {
    let h = r.headers_mut();
    for (k, v) in [
        ("api-version", super::API_VERSION),
        ("docker-experimental", "false"),
        ("ostype", "linux"),
        ("server", "cradle-vdocker (linux)"),
    ] {
        if let Ok(v) = v.parse() {
            h.insert(k, v);
        }
    }
}

fn unhex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decoding of a query component (`+` is a space).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (unhex(b[i + 1]), unhex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded query parameters of a request.
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses the request's query string.
    pub fn of<B>(req: &Request<B>) -> Self {
        let q = req.uri().query().unwrap_or("");
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (decode(k), decode(v)),
                    None => (decode(p), String::new()),
                })
                .collect(),
        )
    }

    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Docker's boolean parameters: `1`, `true`, `True` are true; absent
    /// is `default`.
    pub fn flag(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(v) => !matches!(v, "" | "0" | "false" | "False" | "no"),
        }
    }
}

/// Reads a whole request body, at most `limit` bytes.
pub async fn body_bytes(req: Req, limit: usize) -> Result<Bytes, String> {
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| format!("reading request body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let req = Request::get("/x?path=%2Fetc%2Fhosts&follow=1&tail=all&stdout=true&a+b=c%zz")
            .body(())
            .unwrap();
        let q = Query::of(&req);
        assert_eq!(q.get("path"), Some("/etc/hosts"));
        assert!(q.flag("follow", false));
        assert!(q.flag("stdout", false));
        assert!(!q.flag("stderr", false));
        assert_eq!(q.get("a b"), Some("c%zz"));
        assert_eq!(decode("%4"), "%4");
    }
}
