//! The object layer (`hadss::object`) against an in-process cluster of three storage nodes
//! (N=3, W=2, R=2) and a gateway node: buckets, objects inline and chunked, ranges,
//! conditions, listings, copies, create-only writes, multipart, keys — and the error kinds,
//! through the object layer and at the S3 edge: a write refused because every replica's disk
//! is full is `NoSpace` (S3 `507 InsufficientStorage`), one that cannot reach W replicas is
//! `Unavailable` (S3 `503 ServiceUnavailable`).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::StreamExt;
use hadss::access::{KeyRequest, KeyResponse};
use hadss::object::{
    CompletedPart, Conditions, EtagMatch, ObjectError, ObjectStore, PART_SIZE_BYTES_MIN, PutOptions, StoredHeaders,
};
use hadss_testkit::{Cluster, ClusterOptions};

const TEST_TIMEOUT: Duration = Duration::from_secs(240);

fn random(size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    rand::fill(&mut v[..]);
    v
}

/// A body as a stream of 1 MiB pieces.
fn stream(data: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let pieces: Vec<Result<Bytes, std::io::Error>> =
        data.chunks(1 << 20).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures::stream::iter(pieces)
}

async fn read_all(mut body: hadss::object::ObjectStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(piece) = body.next().await {
        out.extend_from_slice(&piece.unwrap());
    }
    out
}

async fn put(objects: &ObjectStore, bucket: &str, key: &str, data: &[u8]) -> Result<String, ObjectError> {
    objects
        .put_object(bucket, key, PutOptions::default(), stream(data))
        .await
        .map(|s| s.etag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_buckets_multipart_and_keys_through_the_object_layer() {
    let test = async {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(dir.path(), ClusterOptions::default()).await.unwrap();
        let objects = ObjectStore::new(cluster.gateway().clone());
        // A gateway holds no data: it opens no chunk, record or hint store.
        assert!(cluster.gateway().chunk_store().is_none());
        assert!(cluster.gateway().record_store().is_none());
        let gateway_dir = dir.path().join("gateway");
        for store in ["chunks", "records.redb", "hints.redb"] {
            assert!(!gateway_dir.join(store).exists(), "the gateway made {store}");
        }
        assert!(cluster.storage().iter().all(|n| n.chunk_store().is_some()));

        // Buckets.
        assert_eq!(
            objects.create_bucket("No_Such", "root", None, || true).await,
            Err(ObjectError::InvalidBucketName)
        );
        objects.create_bucket("photos", "root", None, || true).await.unwrap();
        assert_eq!(
            objects.create_bucket("photos", "root", None, || true).await,
            Err(ObjectError::BucketAlreadyOwnedByYou)
        );
        assert_eq!(
            objects.create_bucket("photos", "other", None, || false).await,
            Err(ObjectError::BucketAlreadyExists)
        );
        let names: Vec<String> = objects
            .list_buckets()
            .await
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["photos".to_string()]);
        assert_eq!(objects.bucket("nope").await, Err(ObjectError::NoSuchBucket));
        assert_eq!(put(&objects, "nope", "k", b"x").await, Err(ObjectError::NoSuchBucket));

        // Objects: inline and chunked (three 4 MiB chunks, the last partial).
        let small = b"hello, object layer".to_vec();
        let large = random(9 * 1024 * 1024 + 123);
        let small_etag = put(&objects, "photos", "a/small.txt", &small).await.unwrap();
        put(&objects, "photos", "a/b/large.bin", &large).await.unwrap();
        put(&objects, "photos", "z.txt", b"z").await.unwrap();
        let none = Conditions::default();
        let (meta, body) = objects.get_object("photos", "a/small.txt", &none, None).await.unwrap();
        assert_eq!(meta.size_bytes, small.len() as u64);
        assert_eq!(meta.etag, small_etag);
        assert_eq!(read_all(body).await, small);
        let (_, body) = objects
            .get_object("photos", "a/b/large.bin", &none, None)
            .await
            .unwrap();
        assert_eq!(read_all(body).await, large);
        // A range across a chunk boundary.
        let range = 4 * 1024 * 1024 - 10..4 * 1024 * 1024 + 10;
        let (_, body) = objects
            .get_object("photos", "a/b/large.bin", &none, Some(range.clone()))
            .await
            .unwrap();
        assert_eq!(read_all(body).await, large[range.start as usize..range.end as usize]);
        assert!(matches!(
            objects.get_object("photos", "a/small.txt", &none, Some(0..1000)).await,
            Err(ObjectError::InvalidRange)
        ));
        assert!(matches!(
            objects.get_object("photos", "missing", &none, None).await,
            Err(ObjectError::NoSuchKey)
        ));

        // Conditions.
        let if_match = |e: &str| Conditions {
            if_match: Some(EtagMatch::Etag(e.into())),
            ..Default::default()
        };
        assert!(
            objects
                .head_object("photos", "a/small.txt", &if_match(&small_etag))
                .await
                .is_ok()
        );
        assert_eq!(
            objects.head_object("photos", "a/small.txt", &if_match("nope")).await,
            Err(ObjectError::PreconditionFailed)
        );
        let if_none_match = Conditions {
            if_none_match: Some(EtagMatch::Etag(small_etag.clone())),
            ..Default::default()
        };
        assert_eq!(
            objects.head_object("photos", "a/small.txt", &if_none_match).await,
            Err(ObjectError::NotModified)
        );

        // Create-only: the first wins, the second finds the object.
        let create_only = PutOptions {
            create_only: true,
            ..Default::default()
        };
        objects
            .put_object("photos", "once", create_only.clone(), stream(b"1"))
            .await
            .unwrap();
        assert_eq!(
            objects.put_object("photos", "once", create_only, stream(b"2")).await,
            Err(ObjectError::PreconditionFailed)
        );
        // A declared length that the body does not have is refused, nothing written.
        let short = PutOptions {
            content_length: Some(5),
            ..Default::default()
        };
        assert!(matches!(
            objects.put_object("photos", "short", short, stream(b"abc")).await,
            Err(ObjectError::IncompleteBody(_))
        ));
        // A staged body is invisible until committed.
        let staged = objects
            .stage_put("photos", "staged", PutOptions::default(), stream(b"later"))
            .await
            .unwrap();
        assert_eq!(objects.object("photos", "staged").await, Err(ObjectError::NoSuchKey));
        objects.commit_put(staged).await.unwrap();
        assert_eq!(objects.object("photos", "staged").await.unwrap().size_bytes, 5);

        // Listings: prefix, delimiter, marker.
        let listing = objects.list("photos", "a/", Some("/"), None, 1000).await.unwrap();
        assert_eq!(
            listing.objects.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            vec!["a/small.txt"]
        );
        assert_eq!(listing.common_prefixes, vec!["a/b/".to_string()]);
        let page = objects.list("photos", "", None, None, 2).await.unwrap();
        assert!(page.truncated);
        assert_eq!(page.len(), 2);
        let rest = objects
            .list("photos", "", None, page.last.as_deref(), 1000)
            .await
            .unwrap();
        assert!(!rest.truncated);
        assert_eq!(
            page.len() + rest.len(),
            5,
            "a/b/large.bin a/small.txt once staged z.txt"
        );

        // Copy: same bytes and ETag, new metadata when replaced; onto itself only with REPLACE.
        let headers = StoredHeaders {
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        let copied = objects
            .copy_object(
                ("photos", "a/b/large.bin"),
                ("photos", "copy.bin"),
                None,
                None,
                Some((headers, vec![("Colour".into(), "blue".into())])),
            )
            .await
            .unwrap();
        assert_eq!(copied.user_metadata, vec![("colour".to_string(), "blue".to_string())]);
        let (_, body) = objects.get_object("photos", "copy.bin", &none, None).await.unwrap();
        assert_eq!(read_all(body).await, large);
        assert!(matches!(
            objects
                .copy_object(("photos", "z.txt"), ("photos", "z.txt"), None, None, None)
                .await,
            Err(ObjectError::InvalidRequest(_))
        ));

        // Multipart: two parts, the first at the minimum size.
        let part1 = random(PART_SIZE_BYTES_MIN as usize);
        let part2 = random(1024 * 1024);
        let id = objects
            .create_upload("photos", "mp.bin", StoredHeaders::default(), Vec::new())
            .await
            .unwrap();
        let upload = ("photos", "mp.bin", id.as_str());
        let staged = objects.stage_part(upload, 1, None, stream(&part1)).await.unwrap();
        let e1 = objects.commit_part(staged).await.unwrap().etag;
        let staged = objects.stage_part(upload, 2, None, stream(&part2)).await.unwrap();
        let e2 = objects.commit_part(staged).await.unwrap().etag;
        assert_eq!(objects.parts("photos", &id).await.unwrap().len(), 2);
        let part = |number: u32, etag: &str| CompletedPart {
            number,
            etag: Some(etag.to_string()),
        };
        assert_eq!(
            objects
                .complete_upload(upload, &[part(2, &e2), part(1, &e1)], false)
                .await,
            Err(ObjectError::InvalidPartOrder)
        );
        assert!(matches!(
            objects.complete_upload(upload, &[part(1, "bad")], false).await,
            Err(ObjectError::InvalidPart(_))
        ));
        assert!(matches!(
            objects
                .complete_upload(upload, &[part(1, &e1), part(3, &e2)], false)
                .await,
            Err(ObjectError::InvalidPart(_))
        ));
        let done = objects
            .complete_upload(upload, &[part(1, &e1), part(2, &e2)], false)
            .await
            .unwrap();
        assert!(done.etag.ends_with("-2"), "{}", done.etag);
        let (meta, body) = objects.get_object("photos", "mp.bin", &none, None).await.unwrap();
        assert_eq!(meta.etag, done.etag);
        assert_eq!(read_all(body).await, [part1.clone(), part2.clone()].concat());
        assert_eq!(
            objects.upload("photos", "mp.bin", &id).await,
            Err(ObjectError::NoSuchUpload)
        );
        // A small first part makes a completion fail; an abort forgets the upload.
        let id2 = objects
            .create_upload("photos", "mp2.bin", StoredHeaders::default(), Vec::new())
            .await
            .unwrap();
        let upload2 = ("photos", "mp2.bin", id2.as_str());
        let staged = objects.stage_part(upload2, 1, None, stream(&part2)).await.unwrap();
        let small_etag = objects.commit_part(staged).await.unwrap().etag;
        let staged = objects.stage_part(upload2, 2, None, stream(&part2)).await.unwrap();
        let e22 = objects.commit_part(staged).await.unwrap().etag;
        assert!(matches!(
            objects
                .complete_upload(upload2, &[part(1, &small_etag), part(2, &e22)], false)
                .await,
            Err(ObjectError::EntityTooSmall(_))
        ));
        let uploads = objects.list_uploads("photos", "", None, None, 1000).await.unwrap();
        assert_eq!(uploads.uploads.len(), 1);
        assert_eq!(uploads.uploads[0].upload_id, id2);
        objects.abort_upload("photos", "mp2.bin", &id2).await.unwrap();
        assert_eq!(
            objects.abort_upload("photos", "mp2.bin", &id2).await,
            Err(ObjectError::NoSuchUpload)
        );

        // Deletes, then the bucket.
        assert_eq!(objects.delete_bucket("photos").await, Err(ObjectError::BucketNotEmpty));
        objects.delete_object("photos", "missing").await.unwrap();
        let keys = [
            "a/small.txt",
            "a/b/large.bin",
            "z.txt",
            "once",
            "staged",
            "copy.bin",
            "mp.bin",
        ];
        let results = objects
            .delete_objects("photos", keys.iter().map(|k| k.to_string()).collect())
            .await
            .unwrap();
        assert!(results.iter().all(|(_, r)| r.is_ok()));
        assert_eq!(objects.object("photos", "z.txt").await, Err(ObjectError::NoSuchKey));
        objects.delete_bucket("photos").await.unwrap();
        assert_eq!(objects.bucket_fresh("photos").await, Err(ObjectError::NoSuchBucket));

        // Keys: made through any node, read through the object layer's cache.
        let KeyResponse::Created { id, secret } = cluster
            .gateway()
            .key_request(KeyRequest::Create {
                name: "app".into(),
                create_bucket: true,
            })
            .await
        else {
            panic!("key creation failed");
        };
        let key = objects.access_key(&id).await.unwrap().expect("the new key");
        assert_eq!(key.secret, secret);
        assert!(objects.access_key("HKnosuchkey").await.unwrap().is_none());
        // The creating key owns a bucket it creates.
        objects.create_bucket("apps", &id, Some(&id), || false).await.unwrap();
        objects.forget_key(&id);
        let key = objects.access_key(&id).await.unwrap().expect("the key");
        assert!(key.allows(hadss::access::Action::Own("apps")));
    };
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("test timed out");
}

/// An S3 endpoint with the root key `root`/`rootsecret` over `node`, and a client of it.
async fn serve_root(node: &Arc<hadss::node::Node>) -> (hadss::gateway::S3Endpoint, aws_sdk_s3::Client) {
    let endpoint = hadss::gateway::serve(
        "127.0.0.1:0".parse().unwrap(),
        node.clone(),
        ("root", "rootsecret"),
        "us-east-1",
    )
    .await
    .unwrap();
    let client = common::s3::client(&format!("http://{}", endpoint.local_addr()), "root", "rootsecret");
    (endpoint, client)
}

/// Chunk stores of 20 MiB: three 4 MiB chunks of random bytes fill them.
fn small_disks() -> ClusterOptions {
    ClusterOptions {
        chunk_options: chunkstore::Options {
            segment_size_bytes: 8 * 1024 * 1024 + 512 * 1024,
            chunk_size_bytes_max: 4 * 1024 * 1024 + 1024,
            capacity_bytes: Some(20 * 1024 * 1024),
            ..chunkstore::Options::default()
        },
        ..ClusterOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_and_a_lost_quorum_are_different_errors() {
    let test = async {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster::start(dir.path(), small_disks()).await.unwrap();
        let objects = Arc::new(ObjectStore::new(cluster.gateway().clone()));
        let (_endpoint, s3) = serve_root(cluster.gateway()).await;
        s3.create_bucket().bucket("full").send().await.unwrap();

        // Fill the disks through the object layer until a write is refused: for space.
        let mut refused = None;
        for i in 0..16 {
            match put(&objects, "full", &format!("fill-{i}"), &random(8 * 1024 * 1024)).await {
                Ok(_) => {}
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let refused = refused.expect("20 MiB disks refuse some of 128 MiB");
        assert!(matches!(refused, ObjectError::NoSpace(_)), "{refused:?}");
        assert!(!refused.is_transient());
        // Through S3 the same refusal is 507 InsufficientStorage.
        let err = s3
            .put_object()
            .bucket("full")
            .key("one-more")
            .body(ByteStream::from(random(8 * 1024 * 1024)))
            .send()
            .await
            .expect_err("the disks are full");
        assert_eq!(err.code(), Some("InsufficientStorage"), "{err:?}");
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(507));
        // Metadata still fits: small objects live in records, not chunks.
        s3.put_object()
            .bucket("full")
            .key("small")
            .body(ByteStream::from_static(b"tiny"))
            .send()
            .await
            .unwrap();

        // Two of three replicas gone: no write reaches W=2 — unavailable, not full.
        cluster.stop(1);
        cluster.stop(2);
        let lost = put(&objects, "full", "after-loss", b"tiny")
            .await
            .expect_err("W=2 of 1");
        assert!(matches!(lost, ObjectError::Unavailable(_)), "{lost:?}");
        assert!(lost.is_transient());
        let err = s3
            .put_object()
            .bucket("full")
            .key("after-loss")
            .body(ByteStream::from_static(b"tiny"))
            .send()
            .await
            .expect_err("W=2 of 1");
        assert_eq!(err.code(), Some("ServiceUnavailable"), "{err:?}");
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    };
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("test timed out");
}

/// An S3 endpoint on a storage node reads the chunks it holds from its own store: with N=3
/// on three nodes, every chunk of a large object is local, and no chunk is asked of another
/// node. The same object read through a gateway (which holds nothing) asks replicas for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_endpoint_on_a_storage_node_reads_its_own_copies() {
    use std::sync::atomic::Ordering::Relaxed;
    let test = async {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(dir.path(), ClusterOptions::default()).await.unwrap();
        let storage = cluster.storage_node(0).unwrap();
        let (_on_storage, s3) = serve_root(&storage).await;
        let (_on_gateway, via_gateway) = serve_root(cluster.gateway()).await;
        s3.create_bucket().bucket("local").send().await.unwrap();
        // 10 MiB: three chunks (4 + 4 + 2 MiB), written through the storage node's endpoint.
        let data = random(10 * 1024 * 1024);
        s3.put_object()
            .bucket("local")
            .key("big")
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();

        let counters = storage.counters();
        let (local_before, remote_before) = (
            counters.chunk_reads_local.load(Relaxed),
            counters.chunk_reads_remote.load(Relaxed),
        );
        let got = s3.get_object().bucket("local").key("big").send().await.unwrap();
        assert!(
            got.body.collect().await.unwrap().into_bytes() == data,
            "bytes read back"
        );
        assert_eq!(
            counters.chunk_reads_local.load(Relaxed) - local_before,
            3,
            "every chunk read here"
        );
        assert_eq!(
            counters.chunk_reads_remote.load(Relaxed) - remote_before,
            0,
            "no chunk asked of a peer"
        );

        // Through the gateway: the same bytes, every chunk from a replica.
        let gw = cluster.gateway().counters();
        let got = via_gateway
            .get_object()
            .bucket("local")
            .key("big")
            .send()
            .await
            .unwrap();
        assert!(
            got.body.collect().await.unwrap().into_bytes() == data,
            "bytes read through the gateway"
        );
        assert_eq!(gw.chunk_reads_local.load(Relaxed), 0);
        assert_eq!(gw.chunk_reads_remote.load(Relaxed), 3);
    };
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("test timed out");
}
