"""The API docs (Swagger UI at /docs, ReDoc at /redoc) with every asset served from here.

FastAPI's own pages load Swagger UI's script and styles from a public CDN, and model servers
usually run where that cannot be reached: the page stays blank. The same assets come with
the ``fastapi-offline`` package (a maintained bundle of Swagger UI 5 and ReDoc 2); they are
served under /docs/assets, and the pages are FastAPI's own, pointed at them.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.http import auth

ASSETS = "/docs/assets"
router = APIRouter(include_in_schema=False, dependencies=[auth.PUBLIC])


def assets_directory() -> Path:
    """Where the bundled Swagger UI and ReDoc files are on disk."""
    with as_file(files("fastapi_offline") / "static") as path:
        return Path(path)


def install(app: FastAPI) -> None:
    """Serve the docs pages and their assets. The app must be made with ``docs_url=None``
    and ``redoc_url=None`` so FastAPI's CDN pages are not added."""
    app.mount(ASSETS, StaticFiles(directory=assets_directory()), name="docs-assets")
    app.include_router(router)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    app = request.app
    return get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
        # validatorUrl: Swagger UI would otherwise send the document to validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    app = request.app
    return get_redoc_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
        with_google_fonts=False,
    )
