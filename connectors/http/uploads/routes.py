"""The upload routes: `POST /organizations/{orgId}/fileuploads/measurements` reads the
body through its parser into an `UploadJob`; `GET .../{jobId}` answers a job's result."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from connectors.http.auth import OrgAccess
from connectors.http.edge import (
    ACK_TIMEOUT_S,
    ApiError,
    ApiRoute,
    check_content_length,
    edge_of,
    json_response,
    too_large,
)
from connectors.http.keys import Scope
from connectors.http.openapi import ORG_ERRORS, errors, upload_body
from connectors.http.uploads.job import BATCH_SIZE, JobStore, UploadJob
from connectors.http.uploads.multipart import MultipartFile
from connectors.http.uploads.parsers import (
    MEDIA_TYPES,
    BadUpload,
    UnsupportedFormat,
    media_type,
    parser_for,
)
from streams.settings import Settings

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 100 * 1024 * 1024


def unsupported(what: str) -> ApiError:
    accepted = ", ".join(sorted({*MEDIA_TYPES, "multipart/form-data"}))
    return ApiError(
        415, "unsupported_media_type", f"{what}; accepted: {accepted}", field="Content-Type"
    )


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_item_bytes: int = 512_000
    batch_size: int = BATCH_SIZE
    ack_timeout_s: float = ACK_TIMEOUT_S


class _TooLarge(Exception):
    pass


async def read_upload(request: Request, job: UploadJob, limits: UploadLimits) -> str:
    """Feed the body through its parser into `job`; return the job id (content digest).

    Raises 415 for an unknown format, 400 when nothing of the file can be read.
    """
    content_type = request.headers.get("content-type", "")
    kind = media_type(content_type)
    if kind != "multipart/form-data" and kind not in MEDIA_TYPES:
        raise unsupported(f"Content-Type {kind or 'missing'!r} is not an upload format")
    digest = hashlib.sha256()
    try:
        await _read(request, job, limits, content_type, digest.update)
    except UnsupportedFormat as error:
        raise unsupported(str(error)) from None
    except BadUpload as error:
        if job.read == 0:
            where = f"line {error.line}: " if error.line > 1 else ""
            raise ApiError(400, "invalid_upload", f"{where}{error.reason}", field="file") from None
        job.stop(error)
    return digest.hexdigest()[:32]


async def _read(
    request: Request,
    job: UploadJob,
    limits: UploadLimits,
    content_type: str,
    on_file_bytes: Callable[[bytes], None],
) -> None:
    kind = media_type(content_type)
    unpack = MultipartFile(content_type) if kind == "multipart/form-data" else None
    parser = None if unpack is not None else parser_for(MEDIA_TYPES[kind], limits.max_item_bytes)

    def take(pieces: list[bytes]) -> None:
        nonlocal parser
        for piece in pieces:
            if parser is None:
                assert unpack is not None
                parser = parser_for(unpack.format, limits.max_item_bytes)
            on_file_bytes(piece)
            for item in parser.feed(piece):
                job.take(item)

    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limits.max_upload_bytes:
            raise _TooLarge
        take(unpack.feed(chunk) if unpack is not None else [chunk])
        await job.settle()
    if unpack is not None:
        take(unpack.close())
    if parser is None:  # an empty file field
        assert unpack is not None
        parser = parser_for(unpack.format, limits.max_item_bytes)
    for item in parser.close():
        job.take(item)


def uploads_router(
    settings: Settings, limits: UploadLimits | None = None, *, access: OrgAccess | None = None
) -> APIRouter:
    """The upload and job routes; `limits` default to 100 MB uploads and the ingest sizes."""
    limits = limits or UploadLimits(max_item_bytes=settings.max_request_bytes)
    router = APIRouter(route_class=ApiRoute, tags=["ingest"])
    access = access or OrgAccess(settings)
    may_ingest = access.requires(Scope.INGEST)
    may_see_jobs = access.requires(Scope.INGEST, Scope.READ)
    jobs = JobStore()
    path = "/organizations/{orgId}/fileuploads/measurements"

    @router.post(
        path,
        summary="Upload a file of measurements",
        responses=errors(*ORG_ERRORS, 413, 415, 503),
        openapi_extra=upload_body(MEDIA_TYPES, settings.max_measurements_per_request),
    )
    async def upload_measurements(request: Request, org_id: str = Depends(may_ingest)) -> Response:
        edge = edge_of(request)
        counter = edge.metrics.measurements
        check_content_length(request, limits.max_upload_bytes)
        job = UploadJob(
            edge.producer,
            edge.topics.measurements,
            edge.topics.partitions,
            batch_size=limits.batch_size,
            ack_timeout_s=limits.ack_timeout_s,
        )
        try:
            job_id = await read_upload(request, job, limits)
            await job.finish()
        except _TooLarge:
            await job.abandon()
            counter.labels("upload", "accepted").inc(job.accepted)
            raise too_large(
                f"the upload exceeds {limits.max_upload_bytes} bytes; reading stopped there, "
                f"{job.accepted} measurements before that point were accepted",
                accepted=job.accepted,
            ) from None
        counter.labels("upload", "accepted").inc(job.accepted)
        counter.labels("upload", "rejected").inc(job.rejected)
        result = job.result(job_id)
        jobs.put(result)
        log.info(
            "org %s: upload job %s accepted %d, rejected %d measurements",
            org_id,
            job_id,
            job.accepted,
            job.rejected,
        )
        return json_response(result)

    @router.get(
        path + "/{jobId}", summary="The result of an upload job", responses=errors(*ORG_ERRORS)
    )
    async def upload_job(
        job_id: Annotated[str, Path(alias="jobId")], org_id: str = Depends(may_see_jobs)
    ) -> Response:
        result = jobs.get(job_id)
        if result is None:
            raise ApiError(
                404,
                "not_found",
                f"no upload job {job_id!r} in this process (it keeps the results of its "
                f"last {jobs.limit} uploads in memory)",
                field="jobId",
            )
        return json_response(result)

    return router
