"""Bucket setup for the chart's MinIO, run by the minio-setup Job on the docproc image.

Creates the buckets, sets default SSE-S3 encryption on each, and subscribes the webhook target
that MinIO's own environment configures (MINIO_NOTIFY_WEBHOOK_*_DOCPROC) to new objects under
the inbox prefix of the first bucket. Everything goes through the S3 API with the minio client
docproc already ships, so the chart needs no `mc` image. Every step is idempotent: the Job runs
again on each upgrade.

Usage: python setup_minio.py --endpoint HOST:PORT --bucket NAME [--bucket NAME ...]
       [--sse] [--notify-arn ARN --notify-prefix PREFIX]
Credentials: MINIO_ROOT_USER and MINIO_ROOT_PASSWORD in the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import urllib3
from minio import Minio
from minio.error import S3Error
from minio.notificationconfig import NotificationConfig, PrefixFilterRule, QueueConfig
from minio.sseconfig import Rule, SSEConfig

logger = logging.getLogger("docproc.setup_minio")
NOTIFY_ID = "docproc-inbox"


def wait_ready(client: Minio, attempts: int, delay: float) -> None:
    """Wait, bounded, until MinIO answers an authenticated call (it starts with the release)."""
    for attempt in range(1, attempts + 1):
        try:
            client.list_buckets()
            return
        except (S3Error, urllib3.exceptions.HTTPError, OSError) as exc:
            logger.info("MinIO not ready (%d/%d): %s", attempt, attempts, type(exc).__name__)
            if attempt == attempts:
                raise
            time.sleep(delay)


def setup(
    client: Minio, buckets: list[str], sse: bool, notify_arn: str | None, notify_prefix: str | None
) -> None:
    for bucket in buckets:
        if client.bucket_exists(bucket):
            logger.info("bucket %s exists", bucket)
        else:
            client.make_bucket(bucket)
            logger.info("bucket %s created", bucket)
        if sse:
            client.set_bucket_encryption(bucket, SSEConfig(Rule.new_sse_s3_rule()))
            logger.info("bucket %s: default encryption SSE-S3", bucket)
    if notify_arn:
        config = NotificationConfig(
            queue_config_list=[
                QueueConfig(
                    queue=notify_arn,
                    events=["s3:ObjectCreated:*"],
                    config_id=NOTIFY_ID,
                    prefix_filter_rule=PrefixFilterRule(notify_prefix or ""),
                )
            ]
        )
        client.set_bucket_notification(buckets[0], config)
        logger.info("bucket %s: new objects under %r notify %s", buckets[0], notify_prefix, notify_arn)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="MinIO host:port")
    parser.add_argument("--secure", action="store_true", help="use TLS")
    parser.add_argument("--bucket", action="append", required=True, help="bucket to create (repeatable)")
    parser.add_argument("--sse", action="store_true", help="set default SSE-S3 encryption on each bucket")
    parser.add_argument("--notify-arn", help="webhook target ARN, e.g. arn:minio:sqs::DOCPROC:webhook")
    parser.add_argument("--notify-prefix", help="object key prefix that triggers the webhook")
    parser.add_argument("--attempts", type=int, default=60, help="readiness attempts, 2 s apart")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        user, password = os.environ["MINIO_ROOT_USER"], os.environ["MINIO_ROOT_PASSWORD"]
    except KeyError as exc:
        logger.error("missing %s in the environment", exc.args[0])
        return 2
    client = Minio(args.endpoint, access_key=user, secret_key=password, secure=args.secure)
    wait_ready(client, args.attempts, 2.0)
    setup(client, args.bucket, args.sse, args.notify_arn, args.notify_prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
