# Local MinIO for trying S3 mode; see scripts/minio-dev.sh.
.PHONY: minio
minio: env ## run MinIO on 127.0.0.1:9000 (console :9001, data .minio-data/, bucket docs) in the foreground
	@scripts/minio-dev.sh
