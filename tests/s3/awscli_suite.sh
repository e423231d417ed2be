#!/usr/bin/env bash
# The aws cli (v1, from the test venv) against a running HADSS endpoint: make a bucket;
# copy a small, a 20 MiB and a 64 MiB file (multipart, 8 MiB parts) and small files under
# keys with spaces, unicode and +&=?#, copy each back and compare by sha256; sync a
# directory, list, compare; remove recursively, remove the bucket.
# Usage: awscli_suite.sh CREDENTIALS_ENV AWS_BIN
set -euo pipefail
set -a; . "$1"; set +a
aws="$2"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export AWS_CONFIG_FILE="$work/config" AWS_SHARED_CREDENTIALS_FILE="$work/credentials"
run() { "$aws" --endpoint-url "$AWS_ENDPOINT_URL" "$@"; }

head -c $((20 * 1024 * 1024 + 17)) /dev/urandom > "$work/big.bin"
mkdir -p "$work/tree/sub dir"
for i in 1 2 3; do echo "file $i" > "$work/tree/f$i.txt"; echo "nested $i" > "$work/tree/sub dir/n$i.txt"; done

run s3 mb s3://cli-bucket
run s3 cp "$work/big.bin" s3://cli-bucket/big.bin          # 20 MiB: multipart (8 MiB parts)
run s3 sync "$work/tree" s3://cli-bucket/tree
listing=$(run s3 ls --recursive s3://cli-bucket)
echo "$listing"
[ "$(echo "$listing" | wc -l)" -eq 7 ] || { echo "FAIL: expected 7 objects"; exit 1; }
run s3 cp s3://cli-bucket/big.bin "$work/back.bin"
cmp "$work/big.bin" "$work/back.bin" || { echo "FAIL: big.bin differs"; exit 1; }

# Every size and awkward key, compared by sha256.
mkdir "$work/odd" "$work/odd-back"
head -c 1234 /dev/urandom > "$work/odd/small.bin"
head -c $((64 * 1024 * 1024)) /dev/urandom > "$work/odd/huge.bin"
cp "$work/big.bin" "$work/odd/big.bin"
odd=("small.bin" "big.bin" "huge.bin" "with space.txt" "ünïcödé-ключ.txt" "plus+amp&eq=q?hash#.txt")
for k in "with space.txt" "ünïcödé-ключ.txt" "plus+amp&eq=q?hash#.txt"; do cp "$work/odd/small.bin" "$work/odd/$k"; done
for k in "${odd[@]}"; do
    run s3 cp "$work/odd/$k" "s3://cli-bucket/odd/$k" >/dev/null
    run s3 cp "s3://cli-bucket/odd/$k" "$work/odd-back/$k" >/dev/null
    a=$(sha256sum < "$work/odd/$k"); b=$(sha256sum < "$work/odd-back/$k")
    [ "$a" = "$b" ] || { echo "FAIL: odd/$k differs"; exit 1; }
done
etag=$(run s3api head-object --bucket cli-bucket --key odd/huge.bin --query ETag --output text)
case "$etag" in *-8*) ;; *) echo "FAIL: 64 MiB upload was not multipart (ETag $etag)"; exit 1 ;; esac
run s3 rm --recursive s3://cli-bucket/odd >/dev/null
run s3 sync s3://cli-bucket/tree "$work/tree-back"
diff -r "$work/tree" "$work/tree-back" || { echo "FAIL: synced tree differs"; exit 1; }
run s3api head-object --bucket cli-bucket --key "tree/sub dir/n2.txt" >/dev/null
run s3 rm --recursive s3://cli-bucket
run s3 rb s3://cli-bucket
if run s3 ls s3://cli-bucket 2>/dev/null; then echo "FAIL: bucket still there"; exit 1; fi
echo "aws cli suite: PASS"
