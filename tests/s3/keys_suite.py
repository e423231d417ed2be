"""Access keys and their bucket rights, end to end: keys made with `hadss admin key` (the real
binary, against the dev cluster's monitor), used by boto3 against the gateway.

Usage: keys_suite.py CREDENTIALS_ENV HADSS_BINARY CLUSTER_SECRET_FILE MONITOR_ADDR
The credentials file holds the gateway's root key. Exits non-zero on the first failed check;
prints "keys suite: PASS" at the end.
"""
import json
import subprocess
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

# Gateways trust a key they read for up to 1 s (KEY_CACHE_TTL_MS): a change shows within
# that; the checks below wait at most this long for it.
CHANGE_VISIBLE_S = 10


def load_env(path):
    env = {}
    for line in open(path):
        k, _, v = line.strip().partition("=")
        env[k] = v
    return env


def client(env, key_id, secret):
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=env["AWS_REGION"],
        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def code_of(fn, *args, **kwargs):
    """The S3 error code of a call, or None if it succeeded."""
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"]
    return None


def eventually(what, fn):
    """Retries fn until it returns true, for at most CHANGE_VISIBLE_S."""
    deadline = time.monotonic() + CHANGE_VISIBLE_S
    while True:
        got = fn()
        if got is True:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {got!r} after {CHANGE_VISIBLE_S} s")
        time.sleep(0.2)


def main():
    env = load_env(sys.argv[1])
    binary, secret_file, monitor = sys.argv[2], sys.argv[3], sys.argv[4]

    def admin(*args, ok=True):
        out = subprocess.run(
            [binary, "admin", "key", *args, "--secret", secret_file, "--monitor", monitor],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "RUST_BACKTRACE": "0"},
        )
        check((out.returncode == 0) == ok, f"admin key {args}: rc {out.returncode}\n{out.stdout}{out.stderr}")
        return out.stdout + out.stderr

    def create(*flags):
        out = admin("create", *flags)
        lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return lines["access key id"].strip(), lines["secret key"].strip()

    root = client(env, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    root.create_bucket(Bucket="shared-data")
    root.put_object(Bucket="shared-data", Key="report.txt", Body=b"quarterly")
    root.create_bucket(Bucket="root-only")
    root.put_object(Bucket="root-only", Key="secret.txt", Body=b"hidden")

    # A new key can do nothing but list (an empty list).
    app_id, app_secret = create("--name", "app")
    check(app_id.startswith("HK") and len(app_secret) == 64, f"key format: {app_id}")
    app = client(env, app_id, app_secret)
    check(app.list_buckets()["Buckets"] == [], "a new key sees no bucket")
    check(code_of(app.get_object, Bucket="shared-data", Key="report.txt") == "AccessDenied", "read without grant")
    check(code_of(app.head_bucket, Bucket="shared-data") == "403", "head without grant")
    check(code_of(app.create_bucket, Bucket="app-made") == "AccessDenied", "create without the flag")
    wrong = client(env, app_id, "0" * 64)
    check(code_of(wrong.list_buckets) == "SignatureDoesNotMatch", "wrong secret for a cluster key")
    unknown = client(env, "HK000000000000000000000000", "0" * 64)
    check(code_of(unknown.list_buckets) == "InvalidAccessKeyId", "unknown key")

    # Read on one bucket: get, head and list it; no writes, no other bucket.
    admin("allow", app_id, "--bucket", "shared-data", "--read")
    eventually("read grant", lambda: code_of(app.get_object, Bucket="shared-data", Key="report.txt") is None)
    check(app.get_object(Bucket="shared-data", Key="report.txt")["Body"].read() == b"quarterly", "read")
    check([b["Name"] for b in app.list_buckets()["Buckets"]] == ["shared-data"], "lists only its bucket")
    check(len(app.list_objects_v2(Bucket="shared-data")["Contents"]) == 1, "list objects")
    check(code_of(app.put_object, Bucket="shared-data", Key="x", Body=b"x") == "AccessDenied", "write needs write")
    check(code_of(app.delete_object, Bucket="shared-data", Key="report.txt") == "AccessDenied", "delete needs write")
    check(code_of(app.delete_bucket, Bucket="shared-data") == "AccessDenied", "delete bucket needs owner")
    check(code_of(app.get_object, Bucket="root-only", Key="secret.txt") == "AccessDenied", "other bucket")

    # Write: put and copy inside the bucket; copying from a bucket it cannot read is refused.
    admin("allow", app_id, "--bucket", "shared-data", "--write")
    eventually("write grant", lambda: code_of(app.put_object, Bucket="shared-data", Key="by-app", Body=b"a") is None)
    app.copy_object(Bucket="shared-data", Key="copy", CopySource={"Bucket": "shared-data", "Key": "by-app"})
    check(root.get_object(Bucket="shared-data", Key="copy")["Body"].read() == b"a", "copy by the app key")
    check(
        code_of(app.copy_object, Bucket="shared-data", Key="stolen",
                CopySource={"Bucket": "root-only", "Key": "secret.txt"}) == "AccessDenied",
        "copy from an unreadable source",
    )
    check(code_of(root.head_object, Bucket="shared-data", Key="stolen") == "404", "refused copy wrote nothing")
    info = json.loads(admin("info", app_id, "--json"))
    check(info["buckets"] == [{"bucket": "shared-data", "read": True, "write": True, "owner": False}], f"{info}")

    # A key that may create buckets owns what it creates; names stay unique across keys.
    maker_id, maker_secret = create("--name", "maker", "--create-bucket")
    maker = client(env, maker_id, maker_secret)
    eventually("maker key", lambda: code_of(maker.create_bucket, Bucket="maker-bucket") is None)
    maker.put_object(Bucket="maker-bucket", Key="k", Body=b"mine")
    check(code_of(maker.create_bucket, Bucket="maker-bucket") == "BucketAlreadyOwnedByYou", "own bucket again")
    check(code_of(maker.create_bucket, Bucket="shared-data") == "BucketAlreadyExists", "someone else's bucket")
    check(code_of(app.get_object, Bucket="maker-bucket", Key="k") == "AccessDenied", "app cannot read maker's")
    info = json.loads(admin("info", maker_id, "--json"))
    check(info["buckets"] == [{"bucket": "maker-bucket", "read": True, "write": True, "owner": True}], f"{info}")
    check(root.get_object(Bucket="maker-bucket", Key="k")["Body"].read() == b"mine", "root reads every bucket")
    # Deleting the bucket takes its grants away, so a later bucket of that name starts clean.
    maker.delete_object(Bucket="maker-bucket", Key="k")
    maker.delete_bucket(Bucket="maker-bucket")
    info = json.loads(admin("info", maker_id, "--json"))
    check(info["buckets"] == [], f"grants of a deleted bucket are gone: {info}")

    # Imported keys work like made ones.
    admin("import", "--id", "IMPORTEDKEY1", "--secret-key", "imported-secret-0123456789", "--name", "moved")
    admin("import", "--id", "IMPORTEDKEY1", "--secret-key", "another-secret-0123456789", ok=False)
    admin("allow", "IMPORTEDKEY1", "--bucket", "shared-data", "--read")
    imported = client(env, "IMPORTEDKEY1", "imported-secret-0123456789")
    eventually("imported key", lambda: code_of(imported.get_object, Bucket="shared-data", Key="report.txt") is None)

    # Bad edits are refused and change nothing.
    check("not a valid bucket name" in admin("allow", app_id, "--bucket", "Bad_Name", "--read", ok=False), "bad name")
    check("no such key" in admin("info", "HKNOSUCHKEY", ok=False), "info of an unknown key")
    check("no such key" in admin("delete", "HKNOSUCHKEY", ok=False), "delete of an unknown key")

    # Deny takes rights away; delete makes the key unknown.
    admin("deny", app_id, "--bucket", "shared-data", "--write")
    eventually("write revoked",
               lambda: code_of(app.put_object, Bucket="shared-data", Key="late", Body=b"x") == "AccessDenied")
    got = code_of(app.get_object, Bucket="shared-data", Key="report.txt")
    check(got is None, f"read kept after write revoked (got {got})")
    admin("delete", app_id)
    eventually("deleted key", lambda: code_of(app.list_buckets) == "InvalidAccessKeyId")
    listed = json.loads(admin("list", "--json"))
    check(sorted(k["id"] for k in listed) == sorted([maker_id, "IMPORTEDKEY1"]), f"list after delete: {listed}")

    # Anonymous requests are still refused.
    anon = boto3.client(
        "s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
        config=Config(signature_version=__import__("botocore").UNSIGNED, retries={"max_attempts": 1}),
    )
    check(code_of(anon.get_object, Bucket="shared-data", Key="report.txt") == "AccessDenied", "anonymous")
    print("keys suite: PASS")


if __name__ == "__main__":
    main()
