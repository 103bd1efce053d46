"""``GET /openapi.json`` and ``GET /docs`` (a self-contained page listing the operations; no CDN)."""

from __future__ import annotations

import html
import json

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from icy_backend.routes.openapi_doc import openapi_document

_DOCUMENT = json.dumps(openapi_document(), separators=(",", ":")).encode()
_METHODS = ("get", "post", "put", "delete", "patch")


def _page() -> str:
    doc = openapi_document()
    rows = []
    for path, item in doc["paths"].items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            codes = ", ".join(op.get("responses", {}))
            lock = " &#128274;" if op.get("security") else ""
            rows.append(
                f"<tr><td class=m>{method.upper()}</td><td><code>{html.escape(path)}</code>{lock}</td>"
                f"<td>{html.escape(op.get('summary', ''))}</td><td>{codes}</td></tr>"
            )
    title = html.escape(f"{doc['info']['title']} {doc['info']['version']}")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{title} API</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}"
        "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;"
        "text-align:left}.m{font-weight:bold}</style></head><body>"
        f"<h1>{title}</h1><p>{html.escape(doc['info']['description'])} "
        "The full document: <a href=/openapi.json>/openapi.json</a>. &#128274; = API key in prod.</p>"
        "<table><tr><th>Method</th><th>Path</th><th>Summary</th><th>Responses</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )


_PAGE = _page()


async def openapi_json(request: Request) -> Response:
    return Response(_DOCUMENT, media_type="application/json")


async def docs(request: Request) -> Response:
    return HTMLResponse(_PAGE)


routes: list[BaseRoute] = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]

__all__ = ["routes"]
