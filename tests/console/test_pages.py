"""The start page and the API docs: they answer without a key and load nothing from elsewhere."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatlens import __version__, state
from chatlens.console import router as console
from chatlens.observability.deps import Telemetry
from chatlens.settings import Settings

VENDOR = Path(console.__file__).parent / "static" / "vendor"

CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


class _Links(HTMLParser):
    """Every src= and href= of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def links(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    return parser.urls


def assert_local(url: str) -> None:
    assert url.startswith("/"), url
    assert not url.startswith("//"), url


async def assert_asset(client: httpx.AsyncClient, url: str) -> None:
    response = await client.get(url)
    assert response.status_code == 200, url
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type == CONTENT_TYPES[Path(url).suffix], url
    assert response.content, url


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_api_docs_load_only_local_assets(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    # The browser may load from chatlens's own origin only.
    policy = response.headers["content-security-policy"]
    assert policy.startswith("default-src 'self';") and "https:" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    # No CDN, no Google Fonts, no online validator: nothing outside chatlens.
    assert "http://" not in response.text
    assert "https://" not in response.text
    urls = links(response.text)
    assert any(url.endswith(".js") for url in urls)
    for url in urls:
        assert_local(url)
        await assert_asset(client, url)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_api_docs_read_the_schema(client: httpx.AsyncClient, path: str) -> None:
    page = (await client.get(path)).text
    assert "/openapi.json" in page

    schema = (await client.get("/openapi.json")).json()
    assert "/chat" in schema["paths"]
    # The pages themselves are not part of the API.
    assert not {"/", "/docs", "/redoc", "/docs/oauth2-redirect"} & set(schema["paths"])


async def test_swagger_oauth2_redirect_page_is_served(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text
    assert "'/docs/oauth2-redirect'" in page

    response = await client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "https://" not in response.text


async def test_start_page_links_to_docs_metrics_and_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    assert f"chatlens {__version__}" in page
    assert "chatlens keys create --user NAME" in page
    urls = links(page)
    assert {"/docs", "/redoc", "/metrics", "/health"} <= set(urls)
    for url in urls:
        assert_local(url)
        if Path(url).suffix:
            await assert_asset(client, url)
        else:
            linked = await client.get(url)
            assert linked.status_code == 200, url


async def test_start_page_answers_head(client: httpx.AsyncClient) -> None:
    response = await client.head("/")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == b""


async def test_start_page_shows_no_key_or_setting(
    client: httpx.AsyncClient, admin: Any, app: Any
) -> None:
    anonymous = (await client.get("/")).text
    as_admin = (await client.get("/", headers=admin.headers)).text

    assert as_admin == anonymous
    assert admin.key not in anonymous
    assert not re.search(r"cl_[A-Za-z0-9_-]{20,}", anonymous)
    assert str(state.of(app).get(Settings).database_url) not in anonymous


@pytest.fixture
async def proxied_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app as a reverse proxy serves it under /support."""
    transport = httpx.ASGITransport(app=app, root_path="/support")
    async with httpx.AsyncClient(transport=transport, base_url="http://chatlens.test") as c:
        yield c


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
async def test_pages_behind_a_path_prefix_name_prefixed_urls(
    proxied_client: httpx.AsyncClient, path: str
) -> None:
    response = await proxied_client.get(f"/support{path}")

    assert response.status_code == 200
    assert "/support/openapi.json" in response.text or path == "/"
    for url in links(response.text):
        assert url.startswith("/support/"), url


def test_vendor_readme_lists_every_vendored_file_with_its_checksum() -> None:
    readme = (VENDOR / "README.md").read_text(encoding="utf-8")
    files = [p for p in VENDOR.rglob("*") if p.is_file() and p.name != "README.md"]

    assert (VENDOR / Path(console.SWAGGER_UI).name / "swagger-ui-bundle.js").is_file()
    assert (VENDOR / Path(console.REDOC).name / "redoc.standalone.js").is_file()
    for path in files:
        name = path.relative_to(VENDOR).as_posix()
        # The file is the one the README's row names: unchanged since it was vendored.
        [row] = [line for line in readme.splitlines() if line.startswith(f"| `{name}` |")]
        assert f"`{hashlib.sha256(path.read_bytes()).hexdigest()}`" in row, name


async def test_static_files_are_one_route_in_the_metrics(
    client: httpx.AsyncClient, app: Any
) -> None:
    def served(route: str) -> float:
        value = (
            state.of(app)
            .get(Telemetry)
            .metrics.registry.get_sample_value(
                "http_requests_total", {"method": "GET", "route": route, "status": "200"}
            )
        )
        return float(value or 0.0)

    before = served("/static/{path:path}")
    css = next(url for url in links((await client.get("/")).text) if url.endswith(".css"))
    assert (await client.get(css)).status_code == 200
    # Labelled by the mount, not by the file's path, and not as an unmatched route.
    assert served("/static/{path:path}") == before + 1
