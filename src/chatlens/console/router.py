"""The start page and the API docs (Swagger UI, ReDoc), served with no asset from the internet."""

from __future__ import annotations

import functools
import html
from importlib import resources
from string import Template

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from chatlens import __version__

# Where create_app mounts static_files(); asset URLs are built from the mount's name.
STATIC_PATH = "/static"
STATIC_NAME = "static"

# Pinned copies from npm; static/vendor/README.md says how to refresh them. ReDoc stays on
# 2.x: the 3.x bundle is an ES module, which get_redoc_html's plain <script> cannot load.
SWAGGER_UI = "vendor/swagger-ui-dist-5.36.0"
REDOC = "vendor/redoc-2.5.4"

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"

# A page that loads nothing from elsewhere and cannot be framed. The rest (nosniff, no
# referrer, no framing) every response gets from chatlens.hardening.
_HOME_HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'"}

# The API docs run inline scripts and styles (their set-up), draw icons from data: URLs and
# ReDoc searches in a worker made from a blob: nothing from another origin.
_DOCS_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
        "frame-ancestors 'none'"
    )
}

router = APIRouter(include_in_schema=False)
# The API docs, kept apart so that the app can leave all of them out at once.
docs_router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    """The package's static folder, for create_app to mount at STATIC_PATH."""
    return StaticFiles(packages=[("chatlens.console", "static")])


def _root(request: Request) -> str:
    """The prefix a reverse proxy serves the app under ("" when none)."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def _asset(request: Request, path: str) -> str:
    return _root(request) + str(request.app.url_path_for(STATIC_NAME, path=path))


def _openapi_url(request: Request) -> str:
    openapi_url: str = request.app.openapi_url
    return _root(request) + openapi_url


@functools.cache
def _home_template() -> Template:
    source = resources.files("chatlens.console").joinpath("templates", "home.html")
    return Template(source.read_text(encoding="utf-8"))


# GET and HEAD on every page, as FastAPI's own docs routes answered before.
@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    """What chatlens is, where its docs, metrics and health are, and how to get a key."""
    page = _home_template().substitute(
        root=html.escape(_root(request)),
        base=html.escape(str(request.base_url).rstrip("/")),
        stylesheet=html.escape(_asset(request, "console.css")),
        favicon=html.escape(_asset(request, "favicon.svg")),
        version=html.escape(__version__),
        docs_links=_docs_links(request),
    )
    return HTMLResponse(page, headers=_HOME_HEADERS)


def _docs_links(request: Request) -> str:
    if request.app.openapi_url is None:  # CHATLENS_DOCS_ENABLED is off
        return "<li>API docs: not served here (<code>CHATLENS_DOCS_ENABLED</code>)</li>"
    root = html.escape(_root(request))
    return (
        f'<li><a href="{root}/docs">API docs</a>: every endpoint, with requests you can try '
        "(Swagger UI)</li>\n"
        f'<li><a href="{root}/redoc">API reference</a>: the same, for reading (ReDoc)</li>'
    )


@docs_router.api_route(DOCS_PATH, methods=["GET", "HEAD"], response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the OpenAPI schema."""
    app = request.app
    page = get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{app.title} - Swagger UI",
        swagger_js_url=_asset(request, f"{SWAGGER_UI}/swagger-ui-bundle.js"),
        swagger_css_url=_asset(request, f"{SWAGGER_UI}/swagger-ui.css"),
        swagger_favicon_url=_asset(request, f"{SWAGGER_UI}/favicon-32x32.png"),
        oauth2_redirect_url=_root(request) + OAUTH2_REDIRECT_PATH,
        init_oauth=app.swagger_ui_init_oauth,
        # No online validator: its badge would send the schema's URL to validator.swagger.io.
        swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
    )
    page.headers.update(_DOCS_HEADERS)
    return page


@docs_router.api_route(OAUTH2_REDIRECT_PATH, methods=["GET", "HEAD"], response_class=HTMLResponse)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    """Where an OAuth2 provider sends Swagger UI's "Authorize" back to."""
    return get_swagger_ui_oauth2_redirect_html()


@docs_router.api_route(REDOC_PATH, methods=["GET", "HEAD"], response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over the OpenAPI schema."""
    page = get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=_asset(request, f"{REDOC}/redoc.standalone.js"),
        redoc_favicon_url=_asset(request, "favicon.svg"),
        with_google_fonts=False,
    )
    page.headers.update(_DOCS_HEADERS)
    return page
