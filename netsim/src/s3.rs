//! The workload's S3 client: SigV4 query-string signing (`rusty-s3`) over pooled hyper
//! HTTP/1.1 connections, one bounded timeout per request, and outcomes classified the way
//! a history checker needs them (see [`Failure`]).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

/// How long a presigned request stays valid.
const SIGNATURE_TTL: Duration = Duration::from_secs(3600);
/// Longest body read back (the workload's objects are far smaller).
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most keys one listing collects (pages followed until then).
pub const LIST_KEYS_MAX: usize = 100_000;

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with an error status (the operation may still have taken effect
    /// in part: a PUT refused for want of a write quorum can leave copies behind).
    Status(u16, String),
    /// No answer: timeout or broken connection (the operation may have happened).
    NoAnswer(String),
    /// The connection could not be made: the request never left (safe to send elsewhere).
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(code, body) => write!(f, "HTTP {code}: {body}"),
            Failure::NoAnswer(why) => write!(f, "no answer: {why}"),
            Failure::Refused(why) => write!(f, "could not connect: {why}"),
        }
    }
}

/// One gateway endpoint and bucket.
#[derive(Clone)]
pub struct S3 {
    bucket: Bucket,
    credentials: Credentials,
    client: Client,
    timeout: Duration,
}

/// The S3 error code inside an error body, if any.
fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next())
        .map_or_else(|| text.chars().take(120).collect(), str::to_string)
}

impl S3 {
    /// A client of `bucket` at `endpoint`.
    pub fn new(
        endpoint: &str,
        access_key: &str,
        secret_key: &str,
        region: &str,
        bucket: &str,
        timeout_ms: u64,
    ) -> anyhow::Result<S3> {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(timeout_ms)));
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(connector);
        Ok(S3 {
            bucket: Bucket::new(
                endpoint.parse()?,
                UrlStyle::Path,
                bucket.to_string(),
                region.to_string(),
            )?,
            credentials: Credentials::new(access_key, secret_key),
            client,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    async fn send(&self, method: http::Method, url: url::Url, body: Bytes) -> Result<(u16, Vec<u8>), Failure> {
        let request = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(Full::new(body))
            .map_err(|e| Failure::NoAnswer(e.to_string()))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    Failure::Refused(e.to_string())
                } else {
                    Failure::NoAnswer(e.to_string())
                }
            })?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| Failure::NoAnswer(format!("body: {e}")))?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > BODY_BYTES_MAX {
                        return Err(Failure::NoAnswer(format!("body larger than {BODY_BYTES_MAX} bytes")));
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Failure::NoAnswer(format!("timed out after {} ms", self.timeout.as_millis())))?
    }

    fn ok(answer: (u16, Vec<u8>)) -> Result<Vec<u8>, Failure> {
        let (status, body) = answer;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(Failure::Status(status, error_code(&body)))
        }
    }

    /// Creates the bucket (already owning it is fine).
    pub async fn create_bucket(&self) -> Result<(), Failure> {
        let url = self.bucket.create_bucket(&self.credentials).sign(SIGNATURE_TTL);
        match self.send(http::Method::PUT, url, Bytes::new()).await? {
            (409, body) if error_code(&body) == "BucketAlreadyOwnedByYou" => Ok(()),
            answer => Self::ok(answer).map(|_| ()),
        }
    }

    /// PUT of one object.
    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), Failure> {
        let url = self.bucket.put_object(Some(&self.credentials), key).sign(SIGNATURE_TTL);
        Self::ok(self.send(http::Method::PUT, url, body).await?).map(|_| ())
    }

    /// GET of one object: `None` on 404 NoSuchKey.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        let url = self.bucket.get_object(Some(&self.credentials), key).sign(SIGNATURE_TTL);
        match self.send(http::Method::GET, url, Bytes::new()).await? {
            (404, body) if error_code(&body) == "NoSuchKey" => Ok(None),
            answer => Self::ok(answer).map(Some),
        }
    }

    /// DELETE of one object.
    pub async fn delete(&self, key: &str) -> Result<(), Failure> {
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(SIGNATURE_TTL);
        Self::ok(self.send(http::Method::DELETE, url, Bytes::new()).await?).map(|_| ())
    }

    /// Every key under `prefix` (ListObjectsV2, pages followed up to `LIST_KEYS_MAX`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, Failure> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(SIGNATURE_TTL);
            let body = Self::ok(self.send(http::Method::GET, url, Bytes::new()).await?)?;
            let text = String::from_utf8(body).map_err(|_| Failure::Status(200, "listing is not UTF-8".into()))?;
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&text)
                .map_err(|e| Failure::Status(200, format!("listing does not parse: {e}")))?;
            keys.extend(page.contents.into_iter().map(|c| c.key));
            token = page.next_continuation_token;
            if token.is_none() || keys.len() >= LIST_KEYS_MAX {
                return Ok(keys);
            }
        }
    }
}
