"""The embeddable widget script: `/widget.js` (short cache) and `/widget.<hash>.js` (immutable).

Files come from `widget/dist/` (`cd widget && npm run build`) and are re-read when they change,
so a rebuild needs no restart. The hashed URL is the content's SHA-256 prefix, or the hashed
file name the build's `manifest.json` gives; `widget_script_url()` returns it for embed codes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from pyapp.context import SETTINGS
from pyapp.errors import ApiError

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "widget" / "dist"
PLAIN_CACHE = "public, max-age=300"
HASHED_CACHE = "public, max-age=31536000, immutable"
_HASHED_NAME = re.compile(r"^widget\.([A-Za-z0-9_-]{6,64})\.js$")


@dataclass(frozen=True)
class Script:
    body: bytes
    digest: str  # content hash used in the URL and as the ETag
    aliases: frozenset[str]  # other hashes that name the same content (from the manifest)


class WidgetFiles:
    """widget/dist read lazily and cached by modification time."""

    def __init__(self, dist: Path | None = None) -> None:
        self.dist = dist or DIST
        self._stamp: tuple | None = None
        self._script: Script | None = None
        self._hashed: dict[str, bytes] = {}

    def _stat(self) -> tuple:
        out: list[tuple[str, int | None, int | None]] = []
        for name in ("widget.js", "manifest.json"):
            try:
                st = (self.dist / name).stat()
                out.append((name, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((name, None, None))
        return tuple(out)

    def script(self) -> Script | None:
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            self._hashed.clear()
            try:
                body = (self.dist / "widget.js").read_bytes()
            except OSError:
                self._script = None
                return None
            aliases = set()
            for name in _manifest_names(self.dist):
                match = _HASHED_NAME.match(name)
                if match:
                    aliases.add(match.group(1))
            self._script = Script(body, hashlib.sha256(body).hexdigest()[:16], frozenset(aliases))
        return self._script

    def hashed(self, digest: str) -> bytes | None:
        script = self.script()
        if script is None:
            return None
        if digest == script.digest:
            return script.body
        if digest in self._hashed:
            return self._hashed[digest]
        if digest in script.aliases:
            try:
                body = (self.dist / f"widget.{digest}.js").read_bytes()
            except OSError:
                body = script.body
            self._hashed[digest] = body
            return body
        return None


def _manifest_names(dist: Path) -> list[str]:
    """File names mentioned anywhere in manifest.json (its exact shape is the widget build's)."""
    try:
        data = json.loads((dist / "manifest.json").read_text())
    except (OSError, ValueError):
        return []
    names: list[str] = []

    def walk(value) -> None:
        if isinstance(value, str):
            names.append(os.path.basename(value))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(data)
    return names


FILES = web.AppKey("widget_files", WidgetFiles)


def widget_script_url(app: web.Application, base_url: str = "") -> str:
    """The immutable URL of the current widget build (falls back to /widget.js when not built)."""
    script = app[FILES].script()
    if script is None:
        return f"{base_url}/widget.js"
    name = min(script.aliases) if len(script.aliases) == 1 else script.digest
    return f"{base_url}/widget.{name}.js"


def base_url(request: web.Request) -> str:
    """The server's public address (PARLEY_PUBLIC_URL), else the one this request came to."""
    public = request.app[SETTINGS].public_url
    return public.rstrip("/") if public else f"{request.scheme}://{request.host}"


def snippet(base_url: str, public_key: str) -> str:
    """The embed code a site owner pastes into their pages."""
    return f'<script src="{base_url}/widget.js" data-chatbot="{public_key}" async></script>'


def _script_response(request: web.Request, body: bytes, etag: str, cache: str) -> web.Response:
    headers = {
        "Cache-Control": cache,
        "ETag": f'"{etag}"',
        "Access-Control-Allow-Origin": "*",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if request.headers.get("If-None-Match") == f'"{etag}"':
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers=headers, content_type="application/javascript", charset="utf-8")


def _not_built() -> ApiError:
    return ApiError(404, "widget_not_built", "The widget is not built; run `cd widget && npm run build`.")


async def plain_script(request: web.Request) -> web.Response:
    script = request.app[FILES].script()
    if script is None:
        raise _not_built()
    return _script_response(request, script.body, script.digest, PLAIN_CACHE)


async def hashed_script(request: web.Request) -> web.Response:
    digest = request.match_info["digest"]
    body = request.app[FILES].hashed(digest)
    if body is None:
        raise ApiError(404, "not_found", "No such widget build.")
    return _script_response(request, body, digest, HASHED_CACHE)


def setup(app: web.Application) -> None:
    app[FILES] = WidgetFiles()
    app.router.add_get("/widget.js", plain_script)
    app.router.add_get(r"/widget.{digest:[A-Za-z0-9_-]{6,64}}.js", hashed_script)
