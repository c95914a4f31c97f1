"""The API's documentation page: Swagger UI from the installed package, not a CDN.

The page loads only files this server serves (the ``fastapi-offline`` package ships
Swagger UI's script and style), and starts Swagger UI from a script file rather than an
inline one, so it works under the strict Content Security Policy of :mod:`.guard`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<link rel="stylesheet" href="{base}/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi="{openapi}"></div>
<script src="{base}/assets/swagger-ui-bundle.js"></script>
<script src="{base}/start.js"></script>
</body>
</html>
"""

_START = """const where = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: where.dataset.openapi,
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


def swagger_assets() -> Path:
    """Where the installed Swagger UI's files are."""
    return Path(str(files("fastapi_offline") / "static"))


def serve_docs(app: FastAPI, *, docs_url: str, openapi_url: str, title: str) -> None:
    """Serve Swagger UI for ``app``'s OpenAPI at ``docs_url`` (create the app with
    ``docs_url=None``)."""
    page = _PAGE.format(title=title, base=docs_url, openapi=openapi_url)
    app.mount(f"{docs_url}/assets", StaticFiles(directory=swagger_assets()), name="swagger")

    @app.get(docs_url, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(f"{docs_url}/start.js", include_in_schema=False)
    async def start() -> Response:
        return Response(_START, media_type="text/javascript")
