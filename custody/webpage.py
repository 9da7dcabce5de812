"""What the gateway's and the ledger's status pages share: the page frame, escaping and
the access rule. It lives here because ``agent`` and ``ledger`` never import each other.

Theory of operation. A page is built from strings the server wrote (headings, labels)
and strings that came from outside: seal and QR text, vehicle ids, rejection reasons,
serial frames. QR content is attacker-controlled, so every outside string goes through
``text`` (``html.escape`` with quotes), which is the only way a value enters the markup;
the builders below take already-escaped ``Html`` for structure and plain ``str`` for
values, and escape the values themselves.

Access (``Access``): a page on a loopback address is open to whoever can reach it (the
machine's own users); on any other address it answers only with the configured token,
given as ``Authorization: Bearer TOKEN`` (Prometheus, curl) or as the password of HTTP
Basic authentication (a browser asks for it; any user name). Tokens are compared in
constant time (``hmac.compare_digest``). Without a token on a non-loopback address the
page is refused with 403 and the reason.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import html
import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NewType

from custody.errors import ConfigError, CustodyError

__all__ = [
    "MIN_TOKEN_CHARS",
    "Access",
    "Html",
    "Response",
    "document",
    "is_loopback",
    "iso_ms",
    "read_token",
    "respond",
    "table",
    "text",
]

Html = NewType("Html", str)  # markup that is already safe to emit
MIN_TOKEN_CHARS = 16  # a token shorter than this is a password someone will guess
REFRESH_S = 30  # the pages reload themselves (meta refresh): no JavaScript needed

_STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:1.2em;color:#111;background:#fff}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.2em 0}
th,td{border:1px solid #bbb;padding:.2em .6em;text-align:left;vertical-align:top}
th{background:#e8eef4}td.n{text-align:right}
.ok{background:#d8f0d8}.warn{background:#fff0c0}.bad{background:#f8d0d0}
.muted{color:#666}code{font-size:.9em;word-break:break-all}
"""


def text(value: object) -> Html:
    """Any value as text inside markup, quotes included (safe in attributes too)."""
    return Html(html.escape(str(value), quote=True))


def iso_ms(ms: int | float | None) -> str:
    """UTC time of a millisecond timestamp, to the second; an em dash for none."""
    if ms is None:
        return "\u2014"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    table_id: str,
    empty: str = "none",
    row_class: Sequence[str] | None = None,
) -> Html:
    """A table of plain values (each escaped); ``row_class`` names a CSS class per row."""
    head = "".join(f"<th>{text(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{text(row_class[i])}"' if row_class and row_class[i] else ""
        cells = "".join(
            f'<td class="n">{text(v)}</td>' if isinstance(v, int | float) else f"<td>{text(v)}</td>"
            for v in row
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    if not body:
        return Html(f'<p id="{text(table_id)}" class="muted">{text(empty)}</p>')
    return Html(
        f'<table id="{text(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def document(title: str, subtitle: str, sections: Iterable[tuple[str, Html]]) -> bytes:
    """A whole page: heading, then one ``<h2>`` per section; reloads every ``REFRESH_S``."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_S}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{text(title)}</title><style>{_STYLE}</style></head><body>",
        f'<h1>{text(title)}</h1><p class="muted">{text(subtitle)}</p>',
    ]
    for heading, body in sections:
        parts.append(f"<section><h2>{text(heading)}</h2>{body}</section>")
    parts.append("</body></html>")
    return "\n".join(parts).encode("utf-8")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a wildcard address is not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: Path, *, source: str, key: str) -> str:
    """The access token in ``path`` (one line; surrounding white space ignored)."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(source, key, f"token file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, key, f"cannot read the token file {path}: {exc}") from exc
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(
            source, key, f"{path}: the token must be one line of at least {MIN_TOKEN_CHARS} "
            "characters without spaces (e.g. `openssl rand -hex 24`)",
        )  # fmt: skip
    return token


@dataclass(frozen=True, slots=True)
class Access:
    """Who may read the pages of a server listening on ``host`` (module doc)."""

    host: str
    token: str | None = None
    setting: str = "the token setting"  # where the token is configured, named in refusals

    @property
    def open(self) -> bool:
        """No token and a loopback address: the machine's users may read everything."""
        return self.token is None and is_loopback(self.host)

    def refusal(self) -> str | None:
        """Why a page is not served without a token at all (non-loopback, no token)."""
        if self.token is None and not is_loopback(self.host):
            return (
                f"the status page is off: the server listens on {self.host}, not on loopback, "
                f"and {self.setting} is not set\n"
            )
        return None

    def allows(self, authorization: str | None) -> bool:
        """True when no token is set, or the ``Authorization`` header carries it."""
        if self.token is None:
            return True
        given = _credential(authorization or "")
        # compare_digest on bytes: constant time whatever the two strings hold.
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


def _credential(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]  # the password; the user name is not checked
    return None


@dataclass(frozen=True, slots=True)
class Response:
    """What a status server answers: status, content type, body and any extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


_TEXT = "text/plain; charset=utf-8"


def respond(
    path: str,
    authorization: str | None,
    *,
    access: Access,
    realm: str,
    page: Callable[[], bytes] | None,
    health: Callable[[], Mapping[str, Any]],
    metrics: Callable[[], tuple[str, bytes]],
) -> Response:
    """The one routing of the gateway's and the ledger's HTTP servers: ``/`` the page,
    ``/healthz`` JSON (503 when failing), ``/metrics`` (content type and body from
    ``metrics``), all behind ``access``."""
    path = path.split("?", 1)[0]
    refusal = access.refusal()
    if path == "/" and page is not None and refusal:
        return Response(403, _TEXT, refusal.encode())
    if not access.allows(authorization):
        body = f"this server needs the token of {access.setting}\n".encode()
        return Response(401, _TEXT, body, {"WWW-Authenticate": f'Basic realm="{realm}"'})
    if path == "/" and page is not None:
        try:
            return Response(200, "text/html; charset=utf-8", page())
        except CustodyError as exc:  # e.g. the store does not answer
            return Response(503, _TEXT, f"{exc}\n".encode())
    if path == "/healthz":
        report = health()
        status = 503 if report["status"] == "failing" else 200
        return Response(
            status, "application/json", json.dumps(report, sort_keys=True, default=str).encode()
        )
    if path == "/metrics":
        content_type, body = metrics()
        return Response(200, content_type, body)
    return Response(404, _TEXT, b"try /, /healthz or /metrics\n")
