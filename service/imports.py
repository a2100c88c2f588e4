"""Bulk creation of codes from CSV: `POST /v1/codes/bulk` and `mcode import`."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service.api import UNSTORABLE, ApiResponse, read_body, storable
from service.catalog import code_values, create_code, ctx_of, principal
from service.codes import REQUIRED_UTM
from service.context import Context
from service.errors import ApiError, invalid

COLUMNS = ("seller_id", "product_id", "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
REQUIRED_COLUMNS = ("seller_id", "product_id", *REQUIRED_UTM)
MAX_ROWS = 500
CSV_TYPES = ("text/csv", "application/csv", "text/plain", "application/vnd.ms-excel")
RESULT_COLUMNS = ("code", "short_url", "error")


@dataclass
class Upload:
    header: list[str]
    records: list[tuple[int, list[str]]]  # (row number, cells); the header is row 1


@dataclass
class Outcome:
    created: int = 0
    existing: int = 0
    failed: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"created": self.created, "existing": self.existing, "failed": self.failed, "rows": self.rows}


def parse(text: str) -> Upload:
    """Header and records of a CSV text; ERR_422 when required columns are missing."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise invalid({"body": "empty CSV: expected a header row"}) from None
    except csv.Error as exc:
        raise ApiError("ERR_400", f"unreadable CSV: {exc}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise invalid({c: "column missing from the header" for c in missing}, "the CSV header is incomplete")
    records: list[tuple[int, list[str]]] = []
    try:
        for number, cells in enumerate(reader, start=2):
            if any(c.strip() for c in cells):
                records.append((number, cells))
    except csv.Error as exc:
        raise ApiError("ERR_400", f"unreadable CSV: {exc}") from None
    return Upload(header, records)


def _values(header: list[str], cells: list[str]) -> dict[str, Any]:
    if len(cells) > len(header):
        raise invalid({"row": f"{len(cells)} cells but the header has {len(header)} columns"})
    raw = dict(zip(header, cells, strict=False))
    unstorable = {c: UNSTORABLE for c in COLUMNS if c in raw and not storable(raw[c])}
    if unstorable:
        raise invalid(unstorable)
    data: dict[str, Any] = {c: raw[c].strip() for c in COLUMNS if c in raw}
    if not data.get("utm_term"):
        data.pop("utm_term", None)
    return code_values(data)


async def run(ctx: Context, upload: Upload, seller_scope: str | None,
              progress: Callable[[], None] = lambda: None) -> Outcome:
    """Judge every record on its own; a seller key may only create codes for `seller_scope`."""
    outcome = Outcome()
    async with ctx.pool.acquire() as conn:
        for number, cells in upload.records:
            try:
                values = _values(upload.header, cells)
                if seller_scope is not None and values["seller_id"] != seller_scope:
                    raise ApiError("ERR_403", "this key belongs to another seller")
                row, created = await create_code(ctx, conn, values)
            except ApiError as err:
                outcome.failed += 1
                outcome.rows.append({"row": number, "error": err.body()["error"]})
            else:
                if created:
                    outcome.created += 1
                else:
                    outcome.existing += 1
                outcome.rows.append({
                    "row": number, "code": row["code"], "short_url": ctx.short_url(row["code"]),
                    "status": "created" if created else "existing",
                })
            progress()
    return outcome


def error_text(error: dict[str, Any]) -> str:
    text = f"{error['code']}: {error['message']}"
    if error.get("fields"):
        text += " (" + "; ".join(f"{k}: {v}" for k, v in error["fields"].items()) + ")"
    return text


def as_csv(upload: Upload, outcome: Outcome) -> str:
    """The uploaded CSV with `code,short_url,error` columns added."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*upload.header, *RESULT_COLUMNS])
    width = len(upload.header)
    for (_, cells), result in zip(upload.records, outcome.rows, strict=True):
        padded = (cells + [""] * width)[:width] if len(cells) <= width else cells
        error = error_text(result["error"]) if "error" in result else ""
        writer.writerow([*padded, result.get("code", ""), result.get("short_url", ""), error])
    return out.getvalue()


def wants_csv(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept.split("text/csv")[0]


async def post_bulk(request: Request) -> Response:
    ctx = ctx_of(request)
    who = await principal(request)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media and media not in CSV_TYPES:
        raise ApiError("ERR_400", f"expected Content-Type: text/csv, got {media}")
    body = await read_body(request, ctx.settings.max_csv_bytes)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("ERR_400", "the CSV must be UTF-8") from None
    upload = parse(text)
    if len(upload.records) > MAX_ROWS:
        raise ApiError("ERR_413", f"{len(upload.records)} data rows; at most {MAX_ROWS} per upload")
    outcome = await run(ctx, upload, who.seller_id)
    if wants_csv(request):
        return Response(as_csv(upload, outcome), media_type="text/csv; charset=utf-8")
    return ApiResponse(outcome.summary())
