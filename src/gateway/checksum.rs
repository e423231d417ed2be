//! End-to-end integrity of uploads: the checksums S3 clients send (`Content-MD5`, and
//! `x-amz-checksum-{crc32,crc32c,crc64nvme,sha1,sha256}` as headers or as aws-chunked
//! trailers, which current SDKs send by default) are computed over the body as it streams in
//! and compared before anything is acknowledged; a mismatch is `BadDigest` and nothing is
//! recorded. The computed values are echoed in the response.

use base64::Engine as _;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::{Checksum, ChecksumAlgorithm};
use s3s::{S3Result, s3_error};

/// What one upload must match.
pub struct Expected {
    /// Values given in headers (trailers are read after the body).
    pub given: Checksum,
    /// Base64 MD5 from `Content-MD5`.
    pub content_md5: Option<String>,
    /// Lower-case names announced in `x-amz-trailer`.
    pub trailer_names: Vec<String>,
    /// `x-amz-sdk-checksum-algorithm` / `x-amz-checksum-algorithm`.
    pub algorithm: Option<ChecksumAlgorithm>,
}

impl Expected {
    /// Collects what a request announces.
    pub fn from_request(
        headers: &http::HeaderMap,
        given: Checksum,
        content_md5: Option<String>,
        algorithm: Option<ChecksumAlgorithm>,
    ) -> Expected {
        let trailer_names = headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        Expected {
            given,
            content_md5,
            trailer_names,
            algorithm,
        }
    }

    fn wants(&self, name: &str, given: bool) -> bool {
        given
            || self
                .trailer_names
                .iter()
                .any(|t| t == &format!("x-amz-checksum-{name}"))
            || self
                .algorithm
                .as_ref()
                .is_some_and(|a| a.as_str().eq_ignore_ascii_case(name))
    }

    /// A hasher computing every algorithm the request names.
    pub fn hasher(&self) -> ChecksumHasher {
        let g = &self.given;
        ChecksumHasher {
            crc32: self
                .wants("crc32", g.checksum_crc32.is_some())
                .then(s3s::crypto::Crc32::new),
            crc32c: self
                .wants("crc32c", g.checksum_crc32c.is_some())
                .then(s3s::crypto::Crc32c::new),
            sha1: self
                .wants("sha1", g.checksum_sha1.is_some())
                .then(s3s::crypto::Sha1::new),
            sha256: self
                .wants("sha256", g.checksum_sha256.is_some())
                .then(s3s::crypto::Sha256::new),
            crc64nvme: self
                .wants("crc64nvme", g.checksum_crc64nvme.is_some())
                .then(s3s::crypto::Crc64Nvme::new),
        }
    }

    /// Compares what was computed (`actual`, and the body's MD5) with what the request gave,
    /// in headers or in `trailers`. Returns the computed checksums to echo.
    pub fn verify(self, actual: Checksum, md5: &[u8], trailers: Option<http::HeaderMap>) -> S3Result<Checksum> {
        if let Some(want) = &self.content_md5 {
            let got = base64::engine::general_purpose::STANDARD.encode(md5);
            if *want != got {
                return Err(s3_error!(BadDigest, "Content-MD5 does not match the body"));
            }
        }
        let trailer = |name: &str| {
            trailers
                .as_ref()
                .and_then(|t| t.get(format!("x-amz-checksum-{name}")))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let g = self.given;
        let pairs = [
            (
                "crc32",
                g.checksum_crc32.or_else(|| trailer("crc32")),
                &actual.checksum_crc32,
            ),
            (
                "crc32c",
                g.checksum_crc32c.or_else(|| trailer("crc32c")),
                &actual.checksum_crc32c,
            ),
            (
                "crc64nvme",
                g.checksum_crc64nvme.or_else(|| trailer("crc64nvme")),
                &actual.checksum_crc64nvme,
            ),
            (
                "sha1",
                g.checksum_sha1.or_else(|| trailer("sha1")),
                &actual.checksum_sha1,
            ),
            (
                "sha256",
                g.checksum_sha256.or_else(|| trailer("sha256")),
                &actual.checksum_sha256,
            ),
        ];
        for (name, want, got) in pairs {
            if let Some(want) = want
                && got.as_deref() != Some(want.as_str())
            {
                return Err(s3_error!(BadDigest, "x-amz-checksum-{name} does not match the body"));
            }
        }
        Ok(actual)
    }
}
