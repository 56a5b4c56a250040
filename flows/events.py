"""`docproc events serve`: the receiver of MinIO bucket notifications.

MinIO's webhook target POSTs one JSON document per event, with the target's auth token as
``Authorization: Bearer <token>``. For every created object under ``inbox/`` the receiver
creates a flow run of the process deployment of the queue the key names:
``inbox/critical/...`` -> critical, ``inbox/bulk/...`` -> bulk, anything else -> standard.
The run processes the inbox with ``keys`` set to that one object.

Requests without the right token get 401; payloads that are not MinIO events get 400 and a
log line; a Prefect API that cannot be reached gets 503 so that MinIO (with a queue_dir)
delivers the event again. The receiver itself never crashes on input.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote_plus

import httpx
from prefect.client.orchestration import get_client
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from docproc.errors import ConfigurationError
from docproc.queues import Priority
from docproc.settings import Settings
from flows.deployments import submit_run_async

logger = logging.getLogger(__name__)

INBOX_PREFIX = "inbox/"
EVENTS_PATH = "/minio/events"
MAX_BODY_BYTES = 1 << 20
CREATED = "s3:ObjectCreated:"


def queue_for_key(key: str) -> Priority:
    """The queue of an inbox object, by its key's prefix."""
    rest = key.removeprefix(INBOX_PREFIX)
    top = rest.split("/", 1)[0] if "/" in rest else ""
    if top == Priority.CRITICAL.value:
        return Priority.CRITICAL
    if top == Priority.BULK.value:
        return Priority.BULK
    return Priority.STANDARD


# -- the MinIO event format (the S3 event message structure), validated at the boundary -------


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Bucket(_Loose):
    name: str = Field(min_length=1)


class _Object(_Loose):
    key: str = Field(min_length=1)
    size: int | None = None
    eTag: str | None = None  # noqa: N815 - the S3 event's field name
    sequencer: str | None = None


class _S3(_Loose):
    bucket: _Bucket
    object: _Object


class _Record(_Loose):
    eventName: str  # noqa: N815
    s3: _S3


class MinioEvent(_Loose):
    Records: list[_Record] = Field(min_length=1)


@dataclass(frozen=True)
class NewObject:
    bucket: str
    key: str
    etag: str | None
    sequencer: str | None

    @property
    def idempotency_key(self) -> str:
        # MinIO may deliver an event twice (retries); the same event must not start two runs.
        version = self.sequencer or self.etag or ""
        return f"minio:{self.bucket}/{self.key}@{version}"


def inbox_objects(event: MinioEvent) -> list[NewObject]:
    found = []
    for record in event.Records:
        if not record.eventName.startswith(CREATED):
            continue
        key = unquote_plus(record.s3.object.key)
        if not key.startswith(INBOX_PREFIX) or key.endswith("/") or key == INBOX_PREFIX:
            continue
        found.append(NewObject(record.s3.bucket.name, key, record.s3.object.eTag, record.s3.object.sequencer))
    return found


Submitter = Callable[[NewObject, Priority], Awaitable[str]]


def prefect_submitter(settings: Settings, destination: str | None) -> Submitter:
    """Create the run through the Prefect API (the server in PREFECT_API_URL)."""

    async def submit(obj: NewObject, priority: Priority) -> str:
        inbox = f"s3://{obj.bucket}/{INBOX_PREFIX.rstrip('/')}"
        async with get_client() as client:
            run = await submit_run_async(
                client,
                inbox,
                priority=priority,
                destination=destination or f"s3://{obj.bucket}/results",
                keys=[obj.key.removeprefix(INBOX_PREFIX)],
                settings_overrides=settings.overrides() or None,
                idempotency_key=obj.idempotency_key,
                tags=["minio-event"],
            )
        return str(run.id)

    return submit


def _authorized(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def create_app(
    settings: Settings, *, destination: str | None = None, submit: Submitter | None = None
) -> Starlette:
    """The receiver as an ASGI app. A token is required: an open receiver would run anyone's work."""
    if settings.events_token is None or not settings.events_token.get_secret_value():
        raise ConfigurationError("DOCPROC_EVENTS_TOKEN must be set for `docproc events serve`")
    token = settings.events_token.get_secret_value()
    submitter = submit or prefect_submitter(settings, destination)

    async def events(request: Request) -> Response:
        if request.method == "HEAD":
            return Response(status_code=200)  # MinIO probes its target with HEAD before sending
        if not _authorized(request, token):
            logger.warning("refused event from %s: missing or wrong token", _peer(request))
            return PlainTextResponse("unauthorized", status_code=401, headers={"WWW-Authenticate": "Bearer"})
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            logger.warning("refused event from %s: %d bytes", _peer(request), len(body))
            return PlainTextResponse("payload too large", status_code=413)
        try:
            event = MinioEvent.model_validate(json.loads(body))
        except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
            logger.warning("malformed event from %s: %s", _peer(request), _describe(exc))
            return PlainTextResponse("malformed event", status_code=400)
        started: list[dict[str, str]] = []
        for obj in inbox_objects(event):
            priority = queue_for_key(obj.key)
            try:
                run_id = await submitter(obj, priority)
            except (httpx.HTTPError, OSError) as exc:
                logger.error("could not start a run for s3://%s/%s: %s", obj.bucket, obj.key, exc)
                return JSONResponse({"error": "Prefect API unavailable", "runs": started}, status_code=503)
            except ConfigurationError as exc:
                logger.error("could not start a run for s3://%s/%s: %s", obj.bucket, obj.key, exc)
                return JSONResponse({"error": str(exc), "runs": started}, status_code=503)
            logger.info("s3://%s/%s -> %s run %s", obj.bucket, obj.key, priority, run_id)
            started.append({"key": obj.key, "queue": priority.value, "flow_run_id": run_id})
        return JSONResponse({"runs": started})

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route(EVENTS_PATH, events, methods=["POST", "HEAD"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_input=False, include_url=False)
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
    return f"{type(exc).__name__}: {exc}"[:300]


def serve(settings: Settings, host: str, port: int, destination: str | None = None) -> None:
    import uvicorn

    app = create_app(settings, destination=destination)
    logger.info("receiving MinIO events on http://%s:%d%s", host, port, EVENTS_PATH)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
