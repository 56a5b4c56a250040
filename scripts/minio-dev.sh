#!/usr/bin/env bash
# `make minio`: a local MinIO for trying docproc's S3 mode. Data stays in .minio-data/ (gitignored)
# between runs, so do the credentials and the KMS key that encrypts it (.minio-data/.docproc-env).
# Runs in the foreground; Ctrl-C stops it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
address="${MINIO_ADDRESS:-127.0.0.1:9000}"
console="${MINIO_CONSOLE_ADDRESS:-127.0.0.1:9001}"
data="${MINIO_DATA_DIR:-$repo/.minio-data}"
bucket="${MINIO_BUCKET:-docs}"

bin="$(bash "$repo/scripts/tools/minio.sh" | tail -n 1)"
mkdir -p "$data"
env_file="$data/.docproc-env"
if [[ ! -f "$env_file" ]]; then
    # Random once, then reused: the KMS key must not change or SSE-S3 objects become unreadable.
    (
        umask 077
        {
            echo "MINIO_ROOT_USER=docproc"
            echo "MINIO_ROOT_PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
            echo "MINIO_KMS_SECRET_KEY=docproc-dev-key:$(head -c 32 /dev/urandom | base64)"
        } >"$env_file"
    )
fi
set -a
# shellcheck disable=SC1090
source "$env_file"
set +a
export MINIO_UPDATE=off

"$bin" server "$data" --address "$address" --console-address "$console" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null' INT TERM EXIT

for _ in $(seq 1 300); do
    if curl -fsS "http://$address/minio/health/ready" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "minio exited during start-up" >&2; exit 1; fi
    sleep 0.2
done

# Create the bucket through docproc's own client settings (no mc needed).
DOCPROC_S3_ENDPOINT="$address" DOCPROC_S3_ACCESS_KEY="$MINIO_ROOT_USER" \
DOCPROC_S3_SECRET_KEY="$MINIO_ROOT_PASSWORD" "$repo/.venv/bin/python" - "$bucket" <<'PY'
import sys

from minio import Minio

from docproc.settings import Settings

s = Settings()
client = Minio(s.s3_endpoint, s.s3_access_key.get_secret_value(), s.s3_secret_key.get_secret_value(), secure=False)
if not client.bucket_exists(sys.argv[1]):
    client.make_bucket(sys.argv[1])
PY

cat <<MSG

MinIO is running (data in $data).
  S3 endpoint : http://$address
  console     : http://$console   (user $MINIO_ROOT_USER, password below)
  bucket      : $bucket

In another shell:
  export DOCPROC_S3_ENDPOINT=$address
  export DOCPROC_S3_ACCESS_KEY=$MINIO_ROOT_USER
  export DOCPROC_S3_SECRET_KEY=$MINIO_ROOT_PASSWORD
  export DOCPROC_S3_SECURE=false
  export DOCPROC_S3_SSE=s3
  docproc run s3://$bucket/inbox --out s3://$bucket

Ctrl-C stops the server.
MSG
wait "$pid"
