"""The operator's web console, served by the sidecar at ``/ui``.

Static files only: a small front-end in plain JavaScript modules (no build step, no
Node.js to install sagawire), which reads and acts through the admin API with the
token the operator gives it (kept in the tab's sessionStorage). Mermaid's JavaScript is
shipped in ``static/vendor`` so diagrams draw with no network. The pages build the DOM
with text nodes only (``static/dom.js``): nothing from outside is ever parsed as HTML.

Served with a Content-Security-Policy that allows scripts from the sidecar only.
"""

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

__all__ = ["STATIC", "mount_console"]

STATIC = Path(__file__).parent / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none';"
    " base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
)
"""Mermaid writes ``style`` attributes into the SVG it draws: inline styles, not scripts."""


class _Console(StaticFiles):
    """The static files, each answer with the console's security headers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-cache"),
                ]
                message["headers"] = headers
            await send(message)

        await super().__call__(scope, receive, with_headers)


def mount_console(app: FastAPI) -> None:
    """``/ui/`` serves the console (``/ui`` redirects there, so relative links work)."""

    @app.get("/ui", include_in_schema=False)
    async def console_root() -> Response:
        return RedirectResponse("ui/", status_code=308)

    app.mount("/ui/", _Console(directory=STATIC, html=True), name="console")
