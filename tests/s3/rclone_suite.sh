#!/usr/bin/env bash
# rclone (Debian's package, installed by scripts/test) against a running HADSS endpoint: make
# a bucket, upload a small file, a 20 MiB file and a 64 MiB file (multipart, 5 MiB parts)
# and keys with spaces, unicode and +&=?#; list, download and compare by sha256; sync a
# directory twice (the second run copies nothing), check it, delete, purge the bucket.
# Usage: rclone_suite.sh CREDENTIALS_ENV RCLONE_BIN
set -euo pipefail
set -a; . "$1"; set +a
rclone="$2"
# Plain HTTP to 127.0.0.1; a CA bundle from the environment only breaks rclone's S3 client.
unset AWS_CA_BUNDLE
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RCLONE_CONFIG="$work/rclone.conf"
cat > "$RCLONE_CONFIG" <<CFG
[hadss]
type = s3
provider = Other
access_key_id = $AWS_ACCESS_KEY_ID
secret_access_key = $AWS_SECRET_ACCESS_KEY
endpoint = $AWS_ENDPOINT_URL
region = $AWS_REGION
force_path_style = true
CFG
run() { "$rclone" --retries 1 --low-level-retries 1 --s3-upload-cutoff 8M --s3-chunk-size 5M "$@"; }

mkdir "$work/up"
head -c 1234 /dev/urandom > "$work/up/small.bin"
head -c $((20 * 1024 * 1024 + 5)) /dev/urandom > "$work/up/big.bin"
head -c $((64 * 1024 * 1024)) /dev/urandom > "$work/up/huge.bin"
keys=("small.bin" "big.bin" "huge.bin" "with space.txt" "ünïcödé-ключ.txt" "plus+amp&eq=q?hash#.txt")
cp "$work/up/small.bin" "$work/up/with space.txt"
cp "$work/up/small.bin" "$work/up/ünïcödé-ключ.txt"
cp "$work/up/small.bin" "$work/up/plus+amp&eq=q?hash#.txt"

run mkdir hadss:rclone-bucket
for k in "${keys[@]}"; do
    run copyto "$work/up/$k" "hadss:rclone-bucket/one/$k"
done
listing=$(run lsf hadss:rclone-bucket/one)
echo "$listing"
[ "$(echo "$listing" | wc -l)" -eq ${#keys[@]} ] || { echo "FAIL: expected ${#keys[@]} objects"; exit 1; }
mkdir "$work/back"
for k in "${keys[@]}"; do
    run copyto "hadss:rclone-bucket/one/$k" "$work/back/$k"
    a=$(sha256sum < "$work/up/$k"); b=$(sha256sum < "$work/back/$k")
    [ "$a" = "$b" ] || { echo "FAIL: $k differs"; exit 1; }
done
# A sync of the whole directory, then again: the second finds nothing to copy.
run sync "$work/up" hadss:rclone-bucket/synced
run check "$work/up" hadss:rclone-bucket/synced
again=$(run sync -v "$work/up" hadss:rclone-bucket/synced 2>&1)
if echo "$again" | grep -q "Copied"; then echo "FAIL: second sync copied again: $again"; exit 1; fi
run deletefile "hadss:rclone-bucket/one/small.bin"
if run lsf hadss:rclone-bucket/one | grep -qx "small.bin"; then echo "FAIL: deleted object listed"; exit 1; fi
run purge hadss:rclone-bucket
if run lsd hadss: | grep -q rclone-bucket; then echo "FAIL: bucket still there"; exit 1; fi
echo "rclone suite: PASS"
