"""S3 behaviour checked with boto3 against a running HADSS endpoint.

Usage: boto3_suite.py CREDENTIALS_ENV PHASE
  PHASE "main":    buckets, objects, ranges, conditionals, metadata, copy, listings, deletes,
                   error codes, anonymous refusal; leaves bucket "keep" with known objects.
  PHASE "restart": after the server restarted on the same data: "keep" is intact.
  PHASE "two-gateways": writes through this endpoint, reads and lists through the one in
                   $SECOND_ENDPOINT (gateways are stateless).
Exits non-zero with a message on the first failed check.
"""
import base64
import hashlib
import os
import zlib
import sys
import urllib.error
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError


def client(env):
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )


def error_code(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{fn.__name__} succeeded but an error was expected")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def body(seed, size):
    """Self-describing pseudo-random bytes."""
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        out += block
        block = hashlib.sha256(block).digest()
    return bytes(out[:size])


KEEP = {"small.txt": 11, "inline-edge": 128 * 1024, "chunked": 9 * 1024 * 1024 + 7}


def main_phase(s3, env):
    # Buckets.
    s3.create_bucket(Bucket="alpha")
    check(error_code(s3.create_bucket, Bucket="alpha") == "BucketAlreadyOwnedByYou", "duplicate bucket")
    check(error_code(s3.create_bucket, Bucket="Bad_Name") == "InvalidBucketName", "bad bucket name")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    check("alpha" in names, f"list_buckets: {names}")
    s3.head_bucket(Bucket="alpha")
    check(error_code(s3.head_bucket, Bucket="nope") in ("404", "NoSuchBucket"), "head missing bucket")
    check(error_code(s3.get_object, Bucket="nope", Key="k") == "NoSuchBucket", "get from missing bucket")
    s3.get_bucket_location(Bucket="alpha")

    # Objects of several sizes, including ones cut into chunks.
    for size in [0, 1, 1000, 128 * 1024, 128 * 1024 + 1, 4 * 1024 * 1024, 10 * 1024 * 1024 + 3]:
        data = body(f"obj-{size}", size)
        put = s3.put_object(Bucket="alpha", Key=f"sizes/{size}", Body=data)
        check(put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"', f"etag of {size}")
        got = s3.get_object(Bucket="alpha", Key=f"sizes/{size}")
        check(got["Body"].read() == data, f"body of {size}")
        check(got["ContentLength"] == size, f"length of {size}")
    check(error_code(s3.get_object, Bucket="alpha", Key="missing") == "NoSuchKey", "missing key")

    # Ranges, inside one chunk and across chunk boundaries.
    big = body("obj-10485763", 10 * 1024 * 1024 + 3)
    for rng, lo, hi in [("bytes=0-0", 0, 1), ("bytes=4194300-4194310", 4194300, 4194311),
                        ("bytes=-5", len(big) - 5, len(big)), ("bytes=10485000-", 10485000, len(big))]:
        got = s3.get_object(Bucket="alpha", Key="sizes/10485763", Range=rng)
        check(got["Body"].read() == big[lo:hi], f"range {rng}")
        check(got["ContentRange"] == f"bytes {lo}-{hi - 1}/{len(big)}", f"content-range {rng}")
    check(error_code(s3.get_object, Bucket="alpha", Key="sizes/1000", Range="bytes=5000-6000") == "InvalidRange",
          "unsatisfiable range")

    # Checksums the SDK sends (as aws-chunked trailers or headers) are verified and echoed.
    data = body("checksummed", 300 * 1024)
    want = {
        "CRC32": base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode(),
        "SHA1": base64.b64encode(hashlib.sha1(data).digest()).decode(),
        "SHA256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
    }
    for algo in ["CRC32", "SHA1", "SHA256"]:  # CRC32C and CRC64NVME need awscrt in botocore
        put = s3.put_object(Bucket="alpha", Key=f"sum/{algo}", Body=data, ChecksumAlgorithm=algo)
        got = put.get(f"Checksum{algo}")
        check(got is not None and (algo not in want or got == want[algo]), f"{algo} echoed as {got}")
    bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    check(error_code(s3.put_object, Bucket="alpha", Key="sum/bad", Body=data, ChecksumSHA256=bad) == "BadDigest",
          "wrong SHA256 refused")
    check(error_code(s3.put_object, Bucket="alpha", Key="sum/bad", Body=data,
                     ContentMD5=base64.b64encode(hashlib.md5(b"other").digest()).decode()) == "BadDigest",
          "wrong Content-MD5 refused")
    check(error_code(s3.head_object, Bucket="alpha", Key="sum/bad") in ("404", "NoSuchKey"), "nothing stored on mismatch")
    s3.delete_objects(Bucket="alpha", Delete={"Objects": [{"Key": f"sum/{a}"} for a in ["CRC32", "SHA1", "SHA256"]]})

    # Metadata and headers.
    s3.put_object(Bucket="alpha", Key="meta", Body=b"x", ContentType="text/plain", CacheControl="max-age=60",
                  ContentDisposition="attachment", Metadata={"Color": "blue"}, ACL="private")
    head = s3.head_object(Bucket="alpha", Key="meta")
    check(head["ContentType"] == "text/plain", "content type")
    check(head["CacheControl"] == "max-age=60", "cache control")
    check(head["Metadata"] == {"color": "blue"}, f"user metadata {head['Metadata']}")

    # Conditionals.
    etag = head["ETag"]
    check(error_code(s3.get_object, Bucket="alpha", Key="meta", IfMatch='"0000"') == "PreconditionFailed", "If-Match")
    check(error_code(s3.get_object, Bucket="alpha", Key="meta", IfNoneMatch=etag) in ("304", "NotModified"),
          "If-None-Match")
    s3.get_object(Bucket="alpha", Key="meta", IfMatch=etag)
    check(error_code(s3.put_object, Bucket="alpha", Key="meta", Body=b"y", IfNoneMatch="*") == "PreconditionFailed",
          "create-only put over an existing key")
    s3.put_object(Bucket="alpha", Key="fresh", Body=b"y", IfNoneMatch="*")

    # Copy, keeping or replacing metadata.
    s3.copy_object(Bucket="alpha", Key="meta-copy", CopySource={"Bucket": "alpha", "Key": "meta"})
    check(s3.head_object(Bucket="alpha", Key="meta-copy")["Metadata"] == {"color": "blue"}, "copy keeps metadata")
    s3.copy_object(Bucket="alpha", Key="meta-copy", CopySource={"Bucket": "alpha", "Key": "meta"},
                   MetadataDirective="REPLACE", Metadata={"shape": "round"}, ContentType="application/x-test")
    h = s3.head_object(Bucket="alpha", Key="meta-copy")
    check(h["Metadata"] == {"shape": "round"} and h["ContentType"] == "application/x-test", "copy replaces metadata")
    s3.copy_object(Bucket="alpha", Key="big-copy", CopySource="alpha/sizes/10485763")
    check(s3.get_object(Bucket="alpha", Key="big-copy")["Body"].read() == big, "copy of a chunked object")

    # Listings: prefixes, delimiters, pagination (v1 and v2), URL encoding.
    keys = [f"dir{d}/file {i:03}+x" for d in range(3) for i in range(40)]
    for k in keys:
        s3.put_object(Bucket="alpha", Key=k, Body=k.encode())
    seen, token = [], None
    while True:
        kw = {"Bucket": "alpha", "Prefix": "dir", "MaxKeys": 17}
        if token:
            kw["ContinuationToken"] = token
        page = s3.list_objects_v2(**kw)
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    check(seen == sorted(keys), f"v2 pagination: {len(seen)} keys")
    top = s3.list_objects_v2(Bucket="alpha", Delimiter="/")
    check([p["Prefix"] for p in top["CommonPrefixes"]] == ["dir0/", "dir1/", "dir2/", "sizes/"],
          f"common prefixes {top.get('CommonPrefixes')}")
    check([o["Key"] for o in top["Contents"]] == ["big-copy", "fresh", "meta", "meta-copy"], "top-level keys")
    seen, marker = [], ""
    while True:
        page = s3.list_objects(Bucket="alpha", Prefix="dir1/", MaxKeys=9, Marker=marker)
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        marker = seen[-1]
    check(seen == sorted(k for k in keys if k.startswith("dir1/")), "v1 pagination")
    # Paging with a delimiter: every common prefix and key exactly once.
    for style in ["v1", "v2"]:
        items, token = [], None
        while True:
            if style == "v2":
                kw = {"ContinuationToken": token} if token else {}
                page = s3.list_objects_v2(Bucket="alpha", Delimiter="/", MaxKeys=2, **kw)
            else:
                page = s3.list_objects(Bucket="alpha", Delimiter="/", MaxKeys=2, Marker=token or "")
            items += [p["Prefix"] for p in page.get("CommonPrefixes", [])] + [o["Key"] for o in page.get("Contents", [])]
            if not page["IsTruncated"]:
                break
            token = page["NextContinuationToken"] if style == "v2" else page["NextMarker"]
        want = ["big-copy", "dir0/", "dir1/", "dir2/", "fresh", "meta", "meta-copy", "sizes/"]
        check(sorted(items) == want, f"{style} delimiter paging: {items}")
    after = s3.list_objects_v2(Bucket="alpha", Prefix="dir2/", StartAfter="dir2/file 038+x")
    check([o["Key"] for o in after["Contents"]] == ["dir2/file 039+x"], "start-after")
    paginator = s3.get_paginator("list_objects_v2")
    count = sum(len(p.get("Contents", [])) for p in paginator.paginate(Bucket="alpha", PaginationConfig={"PageSize": 50}))
    check(count == len(keys) + 7 + 4, f"paginator count {count}")  # sizes/*, meta, meta-copy, fresh, big-copy

    # Multipart: the transfer manager (as aws cli and rclone use it), then by hand.
    mp_data = body("multipart", 12 * 1024 * 1024 + 5)
    path = os.path.join(os.path.dirname(env["__FILE__"]), "mp.bin")
    with open(path, "wb") as f:
        f.write(mp_data)
    cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    s3.upload_file(path, "alpha", "mp/auto", Config=cfg)
    got = s3.get_object(Bucket="alpha", Key="mp/auto")
    check(got["Body"].read() == mp_data, "multipart body")
    parts_md5 = b"".join(hashlib.md5(mp_data[i:i + 5 * 1024 * 1024]).digest() for i in range(0, len(mp_data), 5 * 1024 * 1024))
    check(got["ETag"] == f'"{hashlib.md5(parts_md5).hexdigest()}-3"', f"multipart ETag {got['ETag']}")
    r = s3.get_object(Bucket="alpha", Key="mp/auto", Range="bytes=5242870-5242890")["Body"].read()
    check(r == mp_data[5242870:5242891], "range across parts")

    up = s3.create_multipart_upload(Bucket="alpha", Key="mp/manual", ContentType="application/x-mp",
                                    Metadata={"m": "1"})["UploadId"]
    e1 = s3.upload_part(Bucket="alpha", Key="mp/manual", UploadId=up, PartNumber=1, Body=mp_data[:6 * 1024 * 1024])["ETag"]
    e2 = s3.upload_part_copy(Bucket="alpha", Key="mp/manual", UploadId=up, PartNumber=2,
                             CopySource={"Bucket": "alpha", "Key": "sizes/10485763"},
                             CopySourceRange="bytes=100-1099")["CopyPartResult"]["ETag"]
    parts = s3.list_parts(Bucket="alpha", Key="mp/manual", UploadId=up)["Parts"]
    check([(p["PartNumber"], p["Size"]) for p in parts] == [(1, 6 * 1024 * 1024), (2, 1000)], f"list_parts {parts}")
    uploads = s3.list_multipart_uploads(Bucket="alpha").get("Uploads", [])
    check([(u["Key"], u["UploadId"]) for u in uploads] == [("mp/manual", up)], f"list_multipart_uploads {uploads}")
    check(error_code(s3.complete_multipart_upload, Bucket="alpha", Key="mp/manual", UploadId=up,
                     MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})
          == "InvalidPartOrder", "part order")
    check(error_code(s3.complete_multipart_upload, Bucket="alpha", Key="mp/manual", UploadId=up,
                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00"'}]}) == "InvalidPart", "part etag")
    s3.complete_multipart_upload(Bucket="alpha", Key="mp/manual", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    h = s3.head_object(Bucket="alpha", Key="mp/manual")
    check(h["ContentLength"] == 6 * 1024 * 1024 + 1000 and h["ContentType"] == "application/x-mp"
          and h["Metadata"] == {"m": "1"}, f"completed upload {h}")
    check(s3.get_object(Bucket="alpha", Key="mp/manual")["Body"].read() == mp_data[:6 * 1024 * 1024] + big[100:1100],
          "completed body")
    check(not s3.list_multipart_uploads(Bucket="alpha").get("Uploads"), "upload gone after completion")
    small = s3.create_multipart_upload(Bucket="alpha", Key="mp/small")["UploadId"]
    s1 = s3.upload_part(Bucket="alpha", Key="mp/small", UploadId=small, PartNumber=1, Body=b"tiny")["ETag"]
    s2 = s3.upload_part(Bucket="alpha", Key="mp/small", UploadId=small, PartNumber=2, Body=b"tail")["ETag"]
    check(error_code(s3.complete_multipart_upload, Bucket="alpha", Key="mp/small", UploadId=small,
                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": s1}, {"PartNumber": 2, "ETag": s2}]})
          == "EntityTooSmall", "small non-last part")
    s3.abort_multipart_upload(Bucket="alpha", Key="mp/small", UploadId=small)
    check(error_code(s3.list_parts, Bucket="alpha", Key="mp/small", UploadId=small) == "NoSuchUpload", "aborted upload")
    versions = s3.list_object_versions(Bucket="alpha", Prefix="mp/")["Versions"]
    check([(v["Key"], v["VersionId"], v["IsLatest"]) for v in versions]
          == [("mp/auto", "null", True), ("mp/manual", "null", True)], f"versions {versions}")
    s3.head_object(Bucket="alpha", Key="mp/auto", VersionId="null")
    s3.delete_objects(Bucket="alpha", Delete={"Objects": [{"Key": "mp/auto"}, {"Key": "mp/manual"}]})

    # Deletes.
    s3.delete_object(Bucket="alpha", Key="fresh")
    s3.delete_object(Bucket="alpha", Key="never-existed")
    check(error_code(s3.get_object, Bucket="alpha", Key="fresh") == "NoSuchKey", "deleted object")
    res = s3.delete_objects(Bucket="alpha", Delete={"Objects": [{"Key": k} for k in keys]})
    check(len(res["Deleted"]) == len(keys) and not res.get("Errors"), "delete_objects")
    check(s3.list_objects_v2(Bucket="alpha", Prefix="dir").get("KeyCount") == 0, "listing after deletes")
    check(error_code(s3.delete_bucket, Bucket="alpha") == "BucketNotEmpty", "delete non-empty bucket")
    s3.create_bucket(Bucket="empty-one")
    s3.delete_bucket(Bucket="empty-one")
    check(error_code(s3.head_bucket, Bucket="empty-one") in ("404", "NoSuchBucket"), "deleted bucket")
    v = s3.get_bucket_versioning(Bucket="alpha")
    check("Status" not in v, f"versioning of an unversioned bucket: {v}")

    # Anonymous and wrongly signed requests are refused.
    try:
        urllib.request.urlopen(env["AWS_ENDPOINT_URL"] + "/alpha/meta")
        raise AssertionError("anonymous GET succeeded")
    except urllib.error.HTTPError as e:
        check(e.code == 403 and b"AccessDenied" in e.read(), f"anonymous GET: {e.code}")
    bad = dict(env, AWS_SECRET_ACCESS_KEY="wrong" + env["AWS_SECRET_ACCESS_KEY"])
    check(error_code(client(bad).list_buckets) == "SignatureDoesNotMatch", "wrong secret")
    unknown = dict(env, AWS_ACCESS_KEY_ID="NOSUCHKEY")
    check(error_code(client(unknown).list_buckets) == "InvalidAccessKeyId", "unknown key")

    presigned_checks(s3, env)
    bad_input_checks(s3, env)
    round_trip_checks(s3)

    # Objects checked again after a restart.
    s3.create_bucket(Bucket="keep")
    for key, size in KEEP.items():
        s3.put_object(Bucket="keep", Key=key, Body=body(key, size))


def round_trip_checks(s3):
    """Small, 20 MiB and 64 MiB (multipart, 8 MiB parts) objects and keys with spaces,
    unicode and +&=?#, through the transfer manager, compared by sha256."""
    import io

    s3.create_bucket(Bucket="round-trip")
    cfg = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024)
    cases = {
        "small.bin": 1234,
        "big.bin": 20 * 1024 * 1024 + 5,
        "huge.bin": 64 * 1024 * 1024,
        "with space.txt": 99,
        "ünïcödé-ключ.txt": 99,
        "plus+amp&eq=q?hash#.txt": 99,
    }
    for key, size in cases.items():
        data = body(key, size)
        s3.upload_fileobj(io.BytesIO(data), "round-trip", key, Config=cfg)
        back = io.BytesIO()
        s3.download_fileobj("round-trip", key, back, Config=cfg)
        check(hashlib.sha256(back.getvalue()).digest() == hashlib.sha256(data).digest(), f"{key} differs")
    check(s3.head_object(Bucket="round-trip", Key="huge.bin")["ETag"].endswith('-8"'), "64 MiB went multipart")
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="round-trip")["Contents"])
    check(listed == sorted(cases), f"listing: {listed}")
    s3.delete_objects(Bucket="round-trip", Delete={"Objects": [{"Key": k} for k in cases]})
    s3.delete_bucket(Bucket="round-trip")


def presigned_checks(s3, env):
    """Query-string SigV4 (presigned URLs) with a plain HTTP client: GET and PUT work,
    a tampered or expired signature is refused."""
    s3.create_bucket(Bucket="presigned")
    data = body("presigned", 70 * 1024)
    s3.put_object(Bucket="presigned", Key="a b+c.bin", Body=data)
    # boto3 presigns with SigV2 unless told otherwise; current SDKs use SigV4. Both.
    v2_url = s3.generate_presigned_url("get_object", Params={"Bucket": "presigned", "Key": "a b+c.bin"}, ExpiresIn=300)
    with urllib.request.urlopen(v2_url) as r:
        check(r.read() == data, "SigV2 presigned GET returns the object")
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
        config=Config(signature_version="s3v4", retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presigned", "Key": "a b+c.bin"}, ExpiresIn=300)
    check("X-Amz-Signature=" in url, f"a SigV4 presigned URL: {url}")
    with urllib.request.urlopen(url) as r:
        check(r.read() == data, "presigned GET returns the object")
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "presigned", "Key": "up.bin"}, ExpiresIn=300)
    up = body("presigned-put", 5000)
    with urllib.request.urlopen(urllib.request.Request(put_url, data=up, method="PUT")) as r:
        check(r.status == 200, f"presigned PUT: {r.status}")
    check(s3.get_object(Bucket="presigned", Key="up.bin")["Body"].read() == up, "presigned PUT stored the body")
    sig = "X-Amz-Signature="
    i = url.index(sig) + len(sig)
    tampered = url[:i] + ("0" if url[i] != "0" else "1") + url[i + 1:]
    try:
        urllib.request.urlopen(tampered)
        raise AssertionError("a tampered presigned URL was accepted")
    except urllib.error.HTTPError as e:
        check(e.code == 403 and b"SignatureDoesNotMatch" in e.read(), f"tampered presigned URL: {e.code}")
    expired = s3.generate_presigned_url("get_object", Params={"Bucket": "presigned", "Key": "a b+c.bin"}, ExpiresIn=1)
    import time
    time.sleep(2)
    try:
        urllib.request.urlopen(expired)
        raise AssertionError("an expired presigned URL was accepted")
    except urllib.error.HTTPError as e:
        check(e.code == 403, f"expired presigned URL: {e.code}")
    for key in ("a b+c.bin", "up.bin"):
        s3.delete_object(Bucket="presigned", Key=key)
    s3.delete_bucket(Bucket="presigned")


def signed_put_headers(env, path, data):
    """SigV4 headers for PUT path with body data (the payload hash covers all of data)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(
        method="PUT",
        url=env["AWS_ENDPOINT_URL"] + path,
        data=data,
        headers={"x-amz-content-sha256": hashlib.sha256(data).hexdigest()},
    )
    creds = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    SigV4Auth(creds, "s3", env["AWS_REGION"]).add_auth(req)
    return {k: v for k, v in req.headers.items()}


def raw_request(env, head_lines, body_part, close_early):
    """Sends a raw HTTP/1.1 request; returns the status line (or "" if none came)."""
    import socket
    import urllib.parse

    u = urllib.parse.urlparse(env["AWS_ENDPOINT_URL"])
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head_lines) + "\r\n\r\n").encode() + body_part)
        if close_early:
            sock.shutdown(socket.SHUT_WR)
        try:
            answer = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            answer = b""
    return answer.split(b"\r\n", 1)[0].decode(errors="replace"), answer


def bad_input_checks(s3, env):
    """Truncated bodies leave no object (and never replace an existing one); oversized
    header sections get 400 RequestHeaderSectionTooLarge (or 431 past the connection
    buffer), and the gateway serves on afterwards."""
    import time
    import urllib.parse

    s3.create_bucket(Bucket="bad-input")
    host = urllib.parse.urlparse(env["AWS_ENDPOINT_URL"]).netloc
    s3.put_object(Bucket="bad-input", Key="existing", Body=b"old content")
    for key, size in (("inline-cut", 100 * 1024), ("chunked-cut", 10 * 1024 * 1024), ("existing", 300 * 1024)):
        data = body(key, size)
        path = f"/bad-input/{key}"
        headers = signed_put_headers(env, path, data)
        lines = [f"PUT {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {size}"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        raw_request(env, lines, data[: size // 2], close_early=True)
    time.sleep(1)
    check(error_code(s3.head_object, Bucket="bad-input", Key="inline-cut") == "404", "truncated small PUT left an object")
    check(error_code(s3.head_object, Bucket="bad-input", Key="chunked-cut") == "404", "truncated large PUT left an object")
    check(s3.get_object(Bucket="bad-input", Key="existing")["Body"].read() == b"old content",
          "a truncated PUT replaced an existing object")
    # The same request sent whole is stored (so the cut, not the signing, is what failed).
    data = body("whole", 100 * 1024)
    headers = signed_put_headers(env, "/bad-input/whole", data)
    lines = ["PUT /bad-input/whole HTTP/1.1", f"Host: {host}", f"Content-Length: {len(data)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
    status, _ = raw_request(env, lines, data, close_early=False)
    check(" 200" in status, f"the whole signed PUT: {status}")
    check(s3.get_object(Bucket="bad-input", Key="whole")["Body"].read() == data, "whole PUT stored")

    # A PUT that waits for `100 Continue` and is refused before its body is read: the answer
    # closes the connection, so a client that never sends the body cannot have its next
    # request read as that body.
    import socket
    held = b"never sent"
    headers = signed_put_headers(dict(env, AWS_ACCESS_KEY_ID="HKNOSUCHKEY0000"), "/bad-input/refused", held)
    lines = ["PUT /bad-input/refused HTTP/1.1", f"Host: {host}", f"Content-Length: {len(held)}", "Expect: 100-continue"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
    u = urllib.parse.urlparse(env["AWS_ENDPOINT_URL"])
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        try:
            while len(answer) < 65536:
                got = sock.recv(65536)
                if not got:
                    break
                answer += got
        except socket.timeout:
            raise AssertionError(f"a refused Expect: 100-continue PUT left the connection open: {answer[:300]}")
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    check(" 403" in status and b"InvalidAccessKeyId" in answer, f"refused 100-continue PUT: {answer[:300]}")
    check(b"connection: close" in answer.lower(), f"refused 100-continue PUT keeps the connection: {answer[:300]}")

    pad = ["x-amz-meta-pad: " + "a" * 10_000]
    status, answer = raw_request(env, ["GET /bad-input/whole HTTP/1.1", f"Host: {host}", "Connection: close"] + pad,
                                 b"", close_early=False)
    check(" 400" in status and b"RequestHeaderSectionTooLarge" in answer, f"10 KB of headers: {status} {answer[:300]}")
    huge = [f"x-pad-{i}: " + "b" * 1000 for i in range(90)]
    status, _ = raw_request(env, ["GET /bad-input/whole HTTP/1.1", f"Host: {host}", "Connection: close"] + huge,
                            b"", close_early=False)
    check(status == "" or " 431" in status or " 400" in status, f"90 KB of headers: {status}")
    check(s3.get_object(Bucket="bad-input", Key="whole")["Body"].read() == data, "still serving after bad headers")
    for key in ("existing", "whole"):
        s3.delete_object(Bucket="bad-input", Key=key)
    s3.delete_bucket(Bucket="bad-input")


def restart_phase(s3, env):
    check("keep" in [b["Name"] for b in s3.list_buckets()["Buckets"]], "bucket survived")
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket="keep")["Contents"]}
    check(listed == KEEP, f"listing survived: {listed}")
    for key, size in KEEP.items():
        check(s3.get_object(Bucket="keep", Key=key)["Body"].read() == body(key, size), f"{key} survived")


def two_gateways_phase(s3, env):
    other = client(dict(env, AWS_ENDPOINT_URL=os.environ["SECOND_ENDPOINT"]))
    s3.create_bucket(Bucket="shared")
    for key, size in KEEP.items():
        s3.put_object(Bucket="shared", Key=key, Body=body(key, size))
    check("shared" in [b["Name"] for b in other.list_buckets()["Buckets"]], "bucket seen by the other gateway")
    listed = {o["Key"]: o["Size"] for o in other.list_objects_v2(Bucket="shared")["Contents"]}
    check(listed == KEEP, f"listing through the other gateway: {listed}")
    for key, size in KEEP.items():
        check(other.get_object(Bucket="shared", Key=key)["Body"].read() == body(key, size), f"{key} via the other")


def main():
    env = dict(line.strip().split("=", 1) for line in open(sys.argv[1]) if "=" in line)
    env["__FILE__"] = sys.argv[1]
    s3 = client(env)
    {"main": main_phase, "restart": restart_phase, "two-gateways": two_gateways_phase}[sys.argv[2]](s3, env)
    print(f"boto3 suite, phase {sys.argv[2]}: PASS")


if __name__ == "__main__":
    main()
