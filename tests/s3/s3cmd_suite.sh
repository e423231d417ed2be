#!/usr/bin/env bash
# s3cmd (from the test venv) against a running HADSS endpoint: make a bucket, put a small
# file, a 20 MiB and a 64 MiB file (multipart, 5 MiB parts) and keys with spaces, unicode
# and +&=?#, list,
# get them back and compare by sha256, delete, remove the bucket.
# Usage: s3cmd_suite.sh CREDENTIALS_ENV S3CMD_BIN
set -euo pipefail
set -a; . "$1"; set +a
s3cmd="$2"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
host=${AWS_ENDPOINT_URL#http://}
cat > "$work/s3cfg" <<CFG
[default]
access_key = $AWS_ACCESS_KEY_ID
secret_key = $AWS_SECRET_ACCESS_KEY
host_base = $host
host_bucket = $host
bucket_location = $AWS_REGION
use_https = False
signature_v2 = False
CFG
run() { "$s3cmd" -c "$work/s3cfg" --no-progress "$@"; }

head -c 1234 /dev/urandom > "$work/small.bin"
head -c $((20 * 1024 * 1024 + 5)) /dev/urandom > "$work/big.bin"
head -c $((64 * 1024 * 1024)) /dev/urandom > "$work/huge.bin"
keys=("small.bin" "big.bin" "huge.bin" "with space.txt" "ünïcödé-ключ.txt" "plus+amp&eq=q?hash#.txt")
cp "$work/small.bin" "$work/with space.txt"
cp "$work/small.bin" "$work/ünïcödé-ключ.txt"
cp "$work/small.bin" "$work/plus+amp&eq=q?hash#.txt"

run mb s3://s3cmd-bucket
for k in "${keys[@]}"; do
    run put --multipart-chunk-size-mb=5 "$work/$k" "s3://s3cmd-bucket/$k"
done
listing=$(run ls s3://s3cmd-bucket)
echo "$listing"
[ "$(echo "$listing" | wc -l)" -eq ${#keys[@]} ] || { echo "FAIL: expected ${#keys[@]} objects"; exit 1; }
mkdir "$work/back"
for k in "${keys[@]}"; do
    run get "s3://s3cmd-bucket/$k" "$work/back/$k"
    a=$(sha256sum < "$work/$k"); b=$(sha256sum < "$work/back/$k")
    [ "$a" = "$b" ] || { echo "FAIL: $k differs"; exit 1; }
done
for k in "${keys[@]}"; do
    run del "s3://s3cmd-bucket/$k"
done
run rb s3://s3cmd-bucket
if run ls s3://s3cmd-bucket 2>/dev/null; then echo "FAIL: bucket still there"; exit 1; fi
echo "s3cmd suite: PASS"
