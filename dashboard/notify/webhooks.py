"""Webhook URLs: held as secret references, checked before anything is sent, posted with short
timeouts to the address that was checked.

A channel stores ``env:NAME`` or ``file:/path``; the URL is read at the moment of checking or
sending and never kept. References live in a scope of their own: ``env:`` names start with
``RUNWAY_WEBHOOK_ENV_PREFIX`` (so a managed database's ``RUNWAY_DB_`` password can never be named),
``file:`` paths lie in the secrets directory, and none of Runway's own secrets resolves.

The URL must be http or https, carry no credentials, and name a host whose every address is a
public one: link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254,
...) are always refused; loopback and private networks only with ``RUNWAY_WEBHOOK_ALLOW_PRIVATE``
or ``DEBUG``. The connection goes to the address that was checked (a name that resolves
elsewhere a moment later is not followed), and redirects are never followed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import ipaddress
import json
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from dashboard.databases import credentials
from dashboard.lib import secrets
from dashboard.lib.secrets import SecretError

# Addresses no webhook may reach, whatever the settings say: metadata services and link-local.
_NEVER = [
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local, and the metadata service of most clouds
        "fe80::/10",
        "fd00:ec2::254/128",  # AWS's metadata service over IPv6
        "100.100.100.200/32",  # Alibaba Cloud's metadata service
        "0.0.0.0/8",
        "::/128",
        "224.0.0.0/4",
        "ff00::/8",
        "240.0.0.0/4",
        "255.255.255.255/32",
    )
]
MAX_RESPONSE = 64 * 1024
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class WebhookRefused(ValueError):
    """A reference or URL Runway will not use; the message says which rule, never the URL."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (an address that passed the rules) and what to ask."""

    scheme: str
    host: str
    port: int
    path: str
    address: str

    def __repr__(self) -> str:  # the path may hold the webhook's secret
        return f"Target({self.scheme}://{self.host}:{self.port}/…)"


def allow_private() -> bool:
    return bool(settings.DEBUG or getattr(settings, "RUNWAY_WEBHOOK_ALLOW_PRIVATE", False))


def scope() -> secrets.Scope:
    """The managed databases' scope (the secrets directory, Runway's own secrets refused) with
    the webhooks' own env prefix."""
    return dataclasses.replace(credentials.scope(), env_prefix=settings.RUNWAY_WEBHOOK_ENV_PREFIX)


def _in_words(message: str) -> str:
    return message.replace("a managed database", "a webhook").replace("password", "secret")


def check_reference_form(ref: str) -> str:
    """The reference normalised, or WebhookRefused: its form and its scope, without reading it."""
    ref = ref.strip()
    prefix = settings.RUNWAY_WEBHOOK_ENV_PREFIX
    if not ref:
        raise WebhookRefused("Give the reference of the webhook's URL, e.g. env:" + prefix + "OPS.")
    if "://" in ref or not ref.startswith(("env:", "file:")):
        raise WebhookRefused(
            "Give a reference, not the URL: put the URL in an environment variable "
            f"({prefix}…) or a file in the secrets directory, and write env:{prefix}NAME or "
            "file:/path here. Runway never stores a webhook's URL."
        )
    kind, _, target = ref.partition(":")
    if kind == "env" and _ENV_NAME.match(target) and not target.startswith(prefix):
        raise WebhookRefused(
            f"env: names of webhooks must start with {prefix} (RUNWAY_WEBHOOK_ENV_PREFIX), so "
            "that no other secret (a database's password) can be sent as a URL."
        )
    try:
        return secrets.check_reference(ref, scope())
    except SecretError as exc:
        raise WebhookRefused(_in_words(str(exc))) from None
    except OSError as exc:  # a path the file system refuses to look at (a name too long)
        raise WebhookRefused(f"The path cannot be used: {exc.strerror}.") from None


def resolve_url(ref: str) -> str:
    """The URL the reference holds, on this host, or WebhookRefused."""
    ref = check_reference_form(ref)
    try:
        value = secrets.resolve(ref, scope())
    except SecretError as exc:
        raise WebhookRefused(_in_words(str(exc))) from None
    except OSError as exc:
        raise WebhookRefused(f"The secret cannot be read: {exc.strerror}.") from None
    return str(value or "").strip()


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    if any(ip in net for net in _NEVER) or ip.is_link_local or ip.is_multicast:
        return (
            "is a link-local, cloud metadata or unusable address (169.254.0.0/16, fe80::/10, "
            "0.0.0.0, multicast): no webhook may reach it"
        )
    if (ip.is_loopback or ip.is_private or ip.is_reserved) and not allow_private():
        return (
            "is a loopback or private address: allowed only with RUNWAY_WEBHOOK_ALLOW_PRIVATE=1 "
            "(for a receiver inside your network)"
        )
    return ""


def check_url(url: str) -> Target:
    """The URL's target once every rule holds (its host resolved here), or WebhookRefused. The
    messages name the rule and at most the host, never the path (which holds the secret)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookRefused("The reference does not hold a URL Runway can read.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookRefused(
            "A webhook URL starts with https:// (or http://); "
            + (f"{scheme}:// is refused." if scheme else "the reference holds no URL.")
        )
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise WebhookRefused(
            "The webhook URL carries credentials (user:password@): give them to the receiver "
            "another way (a token in the path, as Slack does)."
        )
    host = parts.hostname or ""
    if not host:
        raise WebhookRefused("The webhook URL names no host.")
    if any(c in url for c in "\r\n\t ") or not url.isprintable():
        raise WebhookRefused("The webhook URL holds spaces or control characters.")
    port = port or (443 if scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise WebhookRefused(f"The webhook's host {host} does not resolve from here.") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    for address in addresses:
        why = _refusal(ipaddress.ip_address(address.split("%")[0]))
        if why:
            shown = host if host == address else f"{host} ({address})"
            raise WebhookRefused(f"The webhook's host {shown} {why}.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port, path, addresses[0])


# --- Sending ---


@dataclass
class Response:
    status: int
    body: bytes


class _Pinned(http.client.HTTPConnection):
    """Connects to the checked address, whatever the name resolves to now."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(target.host, target.port, timeout=timeout, context=self._tls)
        self._address = target.address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def post_json(target: Target, body: dict[str, Any], *, timeout: float) -> Response:
    """POST ``body`` as JSON; each connect and read waits at most ``timeout`` seconds and the
    whole exchange at most twice that (a receiver that trickles bytes is cut off)."""
    data = json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Runway-notifications/1",
        "Content-Length": str(len(data)),
    }
    return _exchange(target, "POST", data, headers, timeout)


def get(target: Target, *, timeout: float) -> Response:
    """GET the target (a health check, a signal), under the same limits as :func:`post_json`."""
    return _exchange(target, "GET", None, {"User-Agent": "Runway-triggers/1"}, timeout)


def _exchange(
    target: Target, method: str, data: bytes | None, headers: dict[str, str], timeout: float
) -> Response:
    connection: http.client.HTTPConnection = (
        _PinnedTLS(target, timeout) if target.scheme == "https" else _Pinned(target, timeout)
    )
    fired = threading.Event()
    cut = threading.Timer(2 * timeout, _cut, args=(connection, fired))
    cut.daemon = True
    cut.start()
    try:
        connection.request(method, target.path, body=data, headers=headers)
        response = connection.getresponse()
        return Response(response.status, response.read(MAX_RESPONSE))
    except (OSError, http.client.HTTPException):
        if fired.is_set():
            raise TimeoutError(f"cut off after {2 * timeout:g} s") from None
        raise
    finally:
        cut.cancel()
        connection.close()


def _cut(connection: http.client.HTTPConnection, fired: threading.Event) -> None:
    fired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
