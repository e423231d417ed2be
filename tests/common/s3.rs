//! An `aws-sdk-s3` client for in-process and `hadss dev` gateways, and self-describing test
//! bodies.
#![allow(clippy::unwrap_used, dead_code)]

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

pub fn client(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(access_key, secret_key, None, None, "hadss-test"))
        .force_path_style(true)
        .http_client(http)
        .build();
    Client::from_conf(conf)
}

/// Self-describing pseudo-random bytes.
pub fn body(seed: &str, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 32);
    let mut block = *blake3::hash(seed.as_bytes()).as_bytes();
    while out.len() < size {
        out.extend_from_slice(&block);
        block = *blake3::hash(&block).as_bytes();
    }
    out.truncate(size);
    out
}
