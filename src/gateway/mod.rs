//! The S3 gateway: the S3 HTTP API (routing, XML, SigV4 incl. presigned URLs and aws-chunked
//! bodies come from `s3s`) as protocol glue over the object layer (`crate::object`), which
//! owns buckets, objects, chunking, listings, multipart and keys. Stateless: every request
//! reads and writes replicated records and chunks through a `Node` that is not in the map (it
//! coordinates writes like a client), so any number of gateways serve one cluster.
//!
//! - `s3`: one file per S3 operation family, and `s3::errors`, the S3 code of each
//!   object-layer error (a full disk is `507 InsufficientStorage`, a lost quorum
//!   `503 ServiceUnavailable`);
//! - `auth`: who may do what (the gateway's root key, and access keys stored in the cluster
//!   with per-bucket grants, read through the object layer's key cache);
//! - `checksum`: the `Content-MD5` and `x-amz-checksum-*` checks of uploaded bodies.

pub mod auth;
mod checksum;
mod s3;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::node::Node;

pub use s3::HadssS3;

/// A running S3 endpoint; dropping it stops accepting connections (`shutdown` also lets
/// the requests in flight finish).
pub struct S3Endpoint {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    slots: Arc<tokio::sync::Semaphore>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl S3Endpoint {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, asks every open one to close once its request in
    /// flight is answered, and waits until all have closed or `grace_ms` has passed. Returns
    /// how many were still open then.
    pub async fn shutdown(self, grace_ms: u64) -> usize {
        self.task.abort();
        let _ = self.stop.send(true);
        let all = u32::try_from(S3_CONNECTIONS_MAX).unwrap_or(u32::MAX);
        let drained =
            tokio::time::timeout(std::time::Duration::from_millis(grace_ms), self.slots.acquire_many(all)).await;
        match drained {
            Ok(_) => 0,
            Err(_) => S3_CONNECTIONS_MAX - self.slots.available_permits(),
        }
    }
}

impl Drop for S3Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connections an S3 endpoint serves at once; more wait in the accept queue.
pub const S3_CONNECTIONS_MAX: usize = 1024;
/// Largest request header section accepted (names, values and line overhead), as S3's 8 KiB:
/// larger gets `400 RequestHeaderSectionTooLarge`.
pub const HEADER_SECTION_BYTES_MAX: usize = 8 * 1024;
/// Largest read buffer per connection: a header section that does not fit is refused by
/// hyper (`431`) before it is parsed, so a client cannot make a connection hold more.
pub const CONNECTION_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// Most header fields in one request.
pub const HEADERS_MAX: usize = 100;

/// Bytes of a request's header section as sent (`name: value\r\n` per field).
fn header_section_bytes(headers: &hyper::HeaderMap) -> usize {
    headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

/// Whether a request asks for `100 Continue` before it sends its body. Refused before its
/// body is read, such a request may leave the body unsent, so the answer closes the
/// connection (as RFC 9110 lets a server do, and as clients such as botocore and curl expect):
/// otherwise the next request on it, say `GET /…`, would be parsed with its first bytes taken
/// as this body (`ET /…`, a SignatureDoesNotMatch).
fn expects_continue(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(hyper::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The S3 error for a header section over `HEADER_SECTION_BYTES_MAX`.
fn header_too_large() -> hyper::Response<s3s::Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>RequestHeaderSectionTooLarge</Code>\
         <Message>Your request header section exceeds the maximum allowed size ({HEADER_SECTION_BYTES_MAX} bytes).</Message></Error>"
    );
    let mut resp = hyper::Response::new(s3s::Body::from(xml));
    *resp.status_mut() = hyper::StatusCode::BAD_REQUEST;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    resp
}

/// Resolves once the endpoint is told to stop.
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let stop = *rx.borrow_and_update();
        if stop {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Serves the S3 API on `listen` over the cluster reached through `node`. `root` is the
/// gateway's root key (access key id, secret): every right on every bucket. Cluster access
/// keys (`hadss admin key`) are read through `node`.
pub async fn serve(
    listen: SocketAddr,
    node: Arc<Node>,
    root: (&str, &str),
    region: &str,
) -> std::io::Result<S3Endpoint> {
    let objects = Arc::new(crate::object::ObjectStore::new(node));
    let keys = auth::SharedKeys(Arc::new(auth::GatewayKeys::with_cluster(
        root.0,
        root.1,
        objects.clone(),
    )));
    let mut builder = s3s::service::S3ServiceBuilder::new(HadssS3::new(objects, region));
    builder.set_auth(keys.clone());
    builder.set_access(keys);
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(S3_CONNECTIONS_MAX));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let accept_slots = slots.clone();
    let task = tokio::spawn(async move {
        let slots = accept_slots;
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "S3 accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            let guarded = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let service = service.clone();
                async move {
                    let expects_continue = expects_continue(req.headers());
                    let mut resp = if header_section_bytes(req.headers()) > HEADER_SECTION_BYTES_MAX {
                        header_too_large()
                    } else {
                        hyper::service::Service::call(&service, req).await?
                    };
                    if expects_continue && !resp.status().is_success() {
                        // The client may have held its body back (no `100 Continue` was
                        // sent): the connection cannot be reused, or its next request
                        // would be read as the rest of this body.
                        resp.headers_mut().insert(
                            hyper::header::CONNECTION,
                            hyper::header::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, s3s::HttpError>(resp)
                }
            });
            let mut stopping = stopping.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .max_buf_size(CONNECTION_BUFFER_BYTES_MAX)
                    .max_headers(HEADERS_MAX)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), guarded);
                tokio::pin!(conn);
                let ended = tokio::select! {
                    r = conn.as_mut() => r,
                    () = stopped(&mut stopping) => {
                        // Finish the request in flight, then close.
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "S3 connection ended with an error");
                }
                drop(permit);
            });
        }
    });
    Ok(S3Endpoint {
        local_addr,
        task,
        slots,
        stop,
    })
}
