//! The S3 gateway: the S3 HTTP API (routing, XML, SigV4 incl. presigned URLs and aws-chunked
//! bodies come from `s3s`) over the cluster. Stateless: every request reads and writes
//! replicated records and chunks through a `Node` that is not in the map (it coordinates
//! writes like a client), so any number of gateways serve one cluster.
//!
//! Objects up to `INLINE_SIZE_BYTES_MAX` are stored inline in their record (one replicated
//! write); larger ones are cut into `CHUNK_SIZE_BYTES` chunks while the body streams in, with
//! at most `CHUNKS_IN_FLIGHT_MAX` chunk writes in flight per request, so memory per request is
//! bounded whatever the object size. The object record is written only after every chunk is
//! on W replicas: a reader never sees a record whose chunks are missing.
//!
//! Not here yet (see the gateway issue): access keys stored in the cluster with per-bucket
//! permissions (keys come from a static set), race-safe `If-None-Match: *`, checksum
//! headers, hedged reads.

mod checksum;
pub mod model;
mod s3;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::node::Node;

pub use s3::HadssS3;

/// Access keys a gateway accepts (access key id → secret).
#[derive(Clone, Default)]
pub struct StaticKeys {
    keys: HashMap<String, String>,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeys").field("count", &self.keys.len()).finish()
    }
}

impl StaticKeys {
    /// A key set with one key.
    pub fn single(access_key: &str, secret_key: &str) -> StaticKeys {
        let mut keys = HashMap::new();
        keys.insert(access_key.to_string(), secret_key.to_string());
        StaticKeys { keys }
    }
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for StaticKeys {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        match self.keys.get(access_key) {
            Some(secret) => Ok(s3s::auth::SecretKey::from(secret.as_str())),
            None => Err(s3s::s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// A running S3 endpoint; dropping it stops accepting connections.
pub struct S3Endpoint {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl S3Endpoint {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for S3Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connections an S3 endpoint serves at once; more wait in the accept queue.
pub const S3_CONNECTIONS_MAX: usize = 1024;

/// Serves the S3 API on `listen` over the cluster reached through `node`.
pub async fn serve(listen: SocketAddr, node: Arc<Node>, keys: StaticKeys, region: &str) -> std::io::Result<S3Endpoint> {
    let mut builder = s3s::service::S3ServiceBuilder::new(HadssS3::new(node, region));
    builder.set_auth(keys);
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(S3_CONNECTIONS_MAX));
    let task = tokio::spawn(async move {
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
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "S3 connection ended with an error");
                }
                drop(permit);
            });
        }
    });
    Ok(S3Endpoint { local_addr, task })
}
