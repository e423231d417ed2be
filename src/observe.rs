//! Health and Prometheus metrics over HTTP, for every server role: `GET /health` (liveness and
//! a JSON summary), `GET /ready` (200 once the server can serve, 503 before) and
//! `GET /metrics` (OpenMetrics text). A server implements `Observable`; `serve` runs the
//! endpoint on its own listener.
//!
//! Limits: at most `CONNECTIONS_MAX` connections at once (more wait in the accept queue),
//! request bodies are never read, each connection is closed after `CONNECTION_TIMEOUT_MS`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 64;
/// Longest a connection stays open.
pub const CONNECTION_TIMEOUT_MS: u64 = 30_000;

/// What a server reports about itself.
pub trait Observable: Send + Sync + 'static {
    /// Whether the server can serve requests now (e.g. a storage node holds a map).
    fn ready(&self) -> bool;
    /// A JSON summary for `/health`.
    fn health(&self) -> serde_json::Value;
    /// Registers the server's current metric values.
    fn metrics(&self, registry: &mut Registry);
}

/// Registers a counter with its current value.
pub fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstCounter::new(value));
}

/// Registers a gauge with its current value.
pub fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    registry.register(name, help, ConstGauge::new(value));
}

/// The OpenMetrics text of `target`'s current metrics.
pub fn render_metrics(target: &dyn Observable) -> String {
    let mut registry = Registry::with_prefix("hadss");
    target.metrics(&mut registry);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

/// A running HTTP endpoint; dropping it stops the listener.
pub struct HttpEndpoint {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HttpEndpoint {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for HttpEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts serving `/health`, `/ready` and `/metrics` of `target` on `listen`.
pub async fn serve(listen: SocketAddr, target: Arc<dyn Observable>) -> std::io::Result<HttpEndpoint> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let target = target.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let target = target.clone();
                    async move { Ok::<_, Infallible>(respond(&*target, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let _ = tokio::time::timeout(Duration::from_millis(CONNECTION_TIMEOUT_MS), conn).await;
                drop(permit);
            });
        }
    });
    Ok(HttpEndpoint { local_addr, task })
}

fn respond<B>(target: &dyn Observable, req: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        resp
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/health" => {
            let mut body = target.health();
            if let Some(obj) = body.as_object_mut() {
                obj.insert("ready".into(), target.ready().into());
            }
            reply(StatusCode::OK, "application/json", format!("{body}\n"))
        }
        "/ready" => {
            if target.ready() {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n".into())
            }
        }
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render_metrics(target),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /health, /ready or /metrics\n".into(),
        ),
    }
}

/// Largest response body `get` reads.
pub const GET_BODY_SIZE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// `GET http://addr/path` for tools and tests (`hadss admin`, netsim): the status and body.
pub async fn get(addr: SocketAddr, path: &str, timeout_ms: u64) -> std::io::Result<(u16, String)> {
    use http_body_util::BodyExt;
    let io_err = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| io_err(&e))?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| io_err(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| io_err(&e))?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), GET_BODY_SIZE_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| io_err(&*e))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_millis(timeout_ms), fetch)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP request timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(bool);

    impl Observable for Fake {
        fn ready(&self) -> bool {
            self.0
        }
        fn health(&self) -> serde_json::Value {
            serde_json::json!({"role": "test"})
        }
        fn metrics(&self, registry: &mut Registry) {
            counter(registry, "things", "Things done", 7);
            gauge(registry, "level", "A level", -3);
        }
    }

    #[tokio::test]
    async fn serves_health_ready_and_metrics() {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let up = serve(addr, Arc::new(Fake(true))).await.expect("serve");
        let down = serve(addr, Arc::new(Fake(false))).await.expect("serve");
        let (status, body) = get(up.local_addr(), "/metrics", 5000).await.expect("get");
        assert_eq!(status, 200);
        assert!(body.contains("hadss_things_total 7"), "{body}");
        assert!(body.contains("hadss_level -3"), "{body}");
        assert!(body.ends_with("# EOF\n"));
        let (status, body) = get(up.local_addr(), "/health", 5000).await.expect("get");
        assert_eq!(status, 200);
        let health: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(health["ready"], true);
        assert_eq!(health["role"], "test");
        assert_eq!(get(up.local_addr(), "/ready", 5000).await.expect("get").0, 200);
        assert_eq!(get(down.local_addr(), "/ready", 5000).await.expect("get").0, 503);
        assert_eq!(get(up.local_addr(), "/nope", 5000).await.expect("get").0, 404);
    }
}
