"""The OpenAPI 3 document of every /v1 endpoint, built from the request models and a few schemas."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from service.catalog import CodeIn, CodePatch, ProductIn, RateIn, SellerIn

S = dict[str, Any]


def _obj(props: S, required: tuple[str, ...] = ()) -> S:
    return {"type": "object", "properties": props, "required": list(required)}


STR: S = {"type": "string"}
NSTR: S = {"type": ["string", "null"]}
TIME: S = {"type": "string", "format": "date-time"}
BOOL: S = {"type": "boolean"}
INT: S = {"type": "integer"}
MONEY: S = {"type": "object", "additionalProperties": {"type": "string"}, "description": "currency → decimal"}

ERROR = _obj({"error": _obj({"code": STR, "message": STR, "fields": {"type": "object"}}, ("code", "message"))})
SELLER = _obj({k: STR for k in ("seller_id", "name", "status")} | {
    "verified": BOOL, "affiliate_enabled": BOOL, "created_at": TIME, "updated_at": TIME})
PRODUCT = _obj({k: STR for k in ("product_id", "seller_id", "url", "category", "status")} | {
    "stock": INT, "created_at": TIME, "updated_at": TIME})
RATE = _obj({"category": STR, "rate": STR, "updated_at": TIME})
CODE = _obj(
    {k: STR for k in ("code", "short_url", "landing_url", "seller_id", "product_id", "utm_source",
                      "utm_medium", "utm_campaign", "utm_content", "channel")}
    | {"utm_term": NSTR, "active": BOOL, "created_at": TIME, "warnings": {"type": "array", "items": STR}}
)
KEY = _obj({"key": STR, "seller_id": STR}, ("key", "seller_id"))
BULK = _obj({"created": INT, "existing": INT, "failed": INT, "rows": {"type": "array", "items": _obj(
    {"row": INT, "code": STR, "short_url": STR, "status": STR, "error": ERROR["properties"]["error"]})}})


def _list(item: S) -> S:
    return _obj({"items": {"type": "array", "items": item}, "next_cursor": NSTR}, ("items", "next_cursor"))


def _json(schema: S) -> S:
    return {"content": {"application/json": {"schema": schema}}}


def _body(model: type[BaseModel]) -> S:
    return {"required": True, **_json({"$ref": f"#/components/schemas/{model.__name__}"})}


def _query(*names: str) -> list[S]:
    return [{"name": n, "in": "query", "required": False, "schema": STR} for n in names]


def _path(name: str) -> S:
    return {"name": name, "in": "path", "required": True, "schema": STR}


BINARY: S = {"type": "string", "format": "binary"}
ERRORS = {code: {"description": f"ERR_{code}", **_json(ERROR)}
          for code in ("400", "401", "403", "404", "409", "413", "422")}

EVENT_IN = _obj({
    "event_id": STR, "type": {"type": "string", "enum": ["cart", "order", "payment", "refund"]},
    "occurred_at": TIME, "click_id": STR, "order_id": STR,
    "amount": {"type": "string", "description": "decimal string > 0, at most the currency's minor unit"},
    "currency": {"type": "string", "description": "ISO 4217"}, "category": STR,
}, ("event_id", "type", "occurred_at"))
EVENT_OUT = _obj({
    "event_id": STR, "type": STR,
    "status": {"type": "string", "enum": ["attributed", "not_attributed", "recorded"]},
    "reason": NSTR, "click_id": NSTR, "code": NSTR, "order_id": NSTR,
    "commission": _obj({"amount": STR, "currency": STR, "rate": STR,
                        "status": {"type": "string", "enum": ["pending", "payable", "reversed"]}}),
})

INVALID_CLICK = _obj({"click_id": STR, "clicked_at": TIME, "code": STR, "reason": STR, "ip": STR,
                     "user_agent": STR, "referer": STR, "original_click_id": NSTR})
TRAFFIC_ROW = _obj({
    **{k: STR for k in ("day", "code", "utm_source", "utm_medium", "utm_campaign", "utm_content", "channel")},
    **{k: INT for k in ("clicks", "valid_clicks", "carts", "orders", "paid_orders")},
    "invalid_clicks": {"type": "object", "additionalProperties": INT}, "conversion_rate": {"type": "number"},
    "gmv": MONEY, "commission": MONEY, "pending_commission": MONEY,
})

# (method, path, summary, parameters, request body, {status: response schema})
ENDPOINTS: list[tuple[str, str, str, list[S], S | None, dict[str, S]]] = [
    ("put", "/v1/sellers/{seller_id}", "Create or replace a seller (admin)",
     [_path("seller_id")], _body(SellerIn), {"200": SELLER, "201": SELLER}),
    ("get", "/v1/sellers/{seller_id}", "Read a seller", [_path("seller_id")], None, {"200": SELLER}),
    ("post", "/v1/sellers/{seller_id}/keys", "Issue a seller key, shown once (admin)",
     [_path("seller_id")], None, {"201": KEY}),
    ("put", "/v1/products/{product_id}", "Create or replace a product (admin)",
     [_path("product_id")], _body(ProductIn), {"200": PRODUCT, "201": PRODUCT}),
    ("get", "/v1/products/{product_id}", "Read a product", [_path("product_id")], None, {"200": PRODUCT}),
    ("put", "/v1/commission-rates/{category}", "Set a category's commission rate (admin)",
     [_path("category")], _body(RateIn), {"200": RATE, "201": RATE}),
    ("get", "/v1/commission-rates", "List commission rates", [], None, {"200": _list(RATE)}),
    ("post", "/v1/codes", "Create a marketing code (idempotent on seller, product and UTM values)",
     [], _body(CodeIn), {"200": CODE, "201": CODE}),
    ("get", "/v1/codes", "List codes, newest first",
     _query("seller_id", "utm_campaign", "channel", "limit", "cursor"), None, {"200": _list(CODE)}),
    ("post", "/v1/codes/bulk", "Create codes from a CSV upload (at most 500 rows)", [],
     {"required": True, "content": {"text/csv": {"schema": STR}}},
     {"200": BULK}),
    ("get", "/v1/codes/{code}", "Read a code", [_path("code")], None, {"200": CODE}),
    ("patch", "/v1/codes/{code}", "Enable or disable a code", [_path("code")], _body(CodePatch), {"200": CODE}),
    ("get", "/v1/codes/{code}/qr", "The code's QR code (of short_url + ?qr=1, error correction M, quiet zone 4)",
     [_path("code"), *_query("format", "scale")], None,
     {"200": {"content": {"image/svg+xml": {"schema": STR}, "image/png": {"schema": BINARY}}}}),
    ("post", "/v1/events", "Record a signed order event (Mcode-Signature: t=<unix>,v1=<hex HMAC-SHA256>)", [],
     {"required": True, **_json(EVENT_IN)}, {"200": EVENT_OUT, "201": EVENT_OUT}),
    ("get", "/v1/reports/traffic", "Traffic, funnel, GMV and commission by day, code, UTM value or channel",
     _query("seller_id", "from", "to", "group_by", "tz", "format"), None,
     {"200": _obj({"rows": {"type": "array", "items": TRAFFIC_ROW}})}),
    ("get", "/v1/reports/invalid-clicks", "The invalid clicks themselves, newest first",
     _query("seller_id", "from", "to", "reason", "limit", "cursor"), None, {"200": _list(INVALID_CLICK)}),
]
MODELS: list[type[BaseModel]] = [SellerIn, ProductIn, RateIn, CodeIn, CodePatch]


@functools.cache
def document() -> S:
    paths: S = {}
    for method, path, summary, params, body, answers in ENDPOINTS:
        op: S = {
            "summary": summary,
            "parameters": params,
            "responses": {**{code: {"description": summary, **(s if "content" in s else _json(s))}
                             for code, s in answers.items()}, **ERRORS},
        }
        if body is not None:
            op["requestBody"] = body
        if path == "/v1/events":
            op["security"] = [{"signature": []}]
        paths.setdefault(path, {})[method] = op
    schemas = {m.__name__: m.model_json_schema() for m in MODELS}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Marketing Code service", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "signature": {"type": "apiKey", "in": "header", "name": "Mcode-Signature"},
            },
        },
        "security": [{"bearer": []}],
    }
