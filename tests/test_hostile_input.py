"""Hostile input never makes Runway answer 500: every named URL, every role, every place.

Hypothesis sends NUL bytes, huge and negative numbers, invalid UTF-8, percent-encoded lone
surrogates, very long and odd values: in each path segment (the path is built by hand from the
route, since ``reverse()`` refuses such values), as the query parameters the views read (found in
the code, so a new one is covered without editing this file) and random ones, and as POST form
fields. The sweep of explicit examples and half of the random draws go without the NUL
middleware (``refuse_nul_characters``): the views themselves must stand, the net is a net.
The URLs come from the URL table (``test_roles`` builds the objects they point at), so a new URL
is walked without editing this file either. A raised exception fails the test with its traceback
(the test client re-raises, as it does by default).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from django import forms
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.test import Client, RequestFactory, override_settings
from django.urls import NoReverseMatch, URLPattern, URLResolver, get_resolver, resolve
from helpers import ROOT, make_database
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from test_roles import _names, _url

ROLES = ("anonymous", "outsider", "viewer", "engineer", "lead", "admin_user")
NET = "dashboard.accounts.middleware.refuse_nul_characters"
_KWARG = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<key>\w+)>")


def _routes(resolver: URLResolver, prefix: str = "") -> dict[str, tuple[str, Callable[..., Any]]]:
    """URL name -> its whole route (``databases/<slug:name>/runs/<int:run_id>/``) and view."""
    routes: dict[str, tuple[str, Callable[..., Any]]] = {}
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            if entry.app_name != "admin":
                routes |= _routes(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern) and entry.name:
            routes[entry.name] = (prefix + str(entry.pattern), entry.callback)
    return routes


def _methods(view: Callable[..., Any], route: str) -> list[str]:
    """GET and/or POST, as the view's own 405 lists them (``require_POST`` and the like answer
    before anything else, without a user or a database); both when it does not say."""
    request = RequestFactory().generic("DELETE", "/")
    request.user = AnonymousUser()
    request._dont_enforce_csrf_checks = True  # as the test client's requests
    quiet = logging.getLogger("django.request")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        response = view(request, **{m["key"]: "x" for m in _KWARG.finditer(route)})
    except Exception:  # it went further (no database at collection): try both
        return ["GET", "POST"]
    finally:
        quiet.level = level
    allowed = response.get("Allow", "") if response.status_code == 405 else ""
    return [m for m in ("GET", "POST") if m in allowed] or ["GET", "POST"]


NAMES = sorted(_names(get_resolver()))
ROUTES = {name: route for name, (route, _) in _routes(get_resolver()).items()}
METHODS = {
    name: _methods(view, ROUTES[name]) for name, (_, view) in _routes(get_resolver()).items()
}


def _parameters() -> list[str]:
    """The names views read: keys of ``request.GET``/``POST`` in the code, the fields of every
    form, and those read through a helper (the audit page's cursors, ``next``)."""
    found = {"page", "before", "after", "step", "stamp", "next", "from", "fmt"}
    read = re.compile(r"""request\.(?:GET|POST)(?:\.get(?:list)?\(|\[)\s*["'](\w+)["']""")
    tested = re.compile(r"""["'](\w+)["']\s+(?:not\s+)?in\s+request\.(?:GET|POST)""")
    for folder in ("dashboard", "runbooks"):
        for source in (ROOT / folder).rglob("*.py"):
            text = source.read_text()
            found |= set(read.findall(text)) | set(tested.findall(text))
    stack = list(forms.BaseForm.__subclasses__())
    while stack:
        form = stack.pop()
        stack.extend(form.__subclasses__())
        if form.__module__.startswith(("dashboard.", "runbooks.")):
            found |= set(getattr(form, "base_fields", {}))
    return sorted(found)


PARAMETERS = _parameters()


def _encode(value: str | bytes) -> str:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    return quote(raw, safe="")


# As they travel: already percent-encoded (some on purpose not validly).
NASTY = [
    _encode(v)
    for v in (
        "\x00",
        "a\x00b",
        b"\xff",
        b"\xc0\x80",  # an overlong NUL
        "\ud800",  # lone surrogates (UTF-8 encoded, as a careless client sends them)
        "\udfff",
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        "\ufeff\u202e\u200b",
        "\u00b2",  # a digit to str.isdigit(), not to int()
        "\u0663",
        "99999999999999999999999",
        "-99999999999999999999999",
        "9223372036854775808",
        "2147483648",
        "-1",
        "0",
        "1e309",
        "NaN",
        "1.5",
        "0x10",
        " 1 ",
        "9" * 5000,
        "x" * 20000,
        "../../../etc/passwd",
        "head",
        "heads",
        "base",
        "0017@head",
        "0017+1",
        "-1:0017",
        "<script>alert(1)</script>",
        "' OR 1=1 --",
        "\r\nSet-Cookie: x=1",
        "[]",
        "{}",
        "s3://[bucket",  # urlsplit refuses an unclosed IPv6 netloc with a ValueError
        "file://[x/",
        "postgresql://u@[::1/db",
        "host=' dbname=",
        "0001-01-01",
        "9999-12-31",
        "2024-02-30",
        "//evil.example/",
        "",
    )
] + ["%", "%G0", "%%", "%2", "%u0000"]

hostile = st.one_of(
    st.sampled_from(NASTY),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=30).map(_encode),
    st.binary(max_size=30).map(_encode),
)
keys = st.one_of(
    st.sampled_from(PARAMETERS),
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8),
    hostile,
)
pairs = st.lists(st.tuples(keys, hostile), max_size=4)


class Walk:
    """The cast, one logged-in client per role and net, and each URL's valid kwargs (real
    objects, made once): Hypothesis runs many examples in one test, and logging in is slow."""

    def __init__(self, cast: dict[str, Any]) -> None:
        self.cast = cast
        self.clients: dict[tuple[str, bool], Client] = {}
        self.kwargs: dict[str, dict[str, Any]] = {}

    def client(self, who: str, net: bool) -> Client:
        if (who, net) not in self.clients:
            client = Client()
            middleware = (
                settings.MIDDLEWARE if net else [m for m in settings.MIDDLEWARE if m != NET]
            )
            with override_settings(MIDDLEWARE=middleware):
                client.handler.load_middleware()  # kept for the client's life
            if who != "anonymous":
                client.force_login(self.cast[who])
            self.clients[who, net] = client
        return self.clients[who, net]

    def valid_kwargs(self, name: str) -> dict[str, Any]:
        if name not in self.kwargs:
            try:
                self.kwargs[name] = dict(resolve(urlsplit(_url(name)).path).kwargs)
            except NoReverseMatch:  # a URL test_roles cannot build yet: plain stand-ins
                stand_in = {"int": 1, "slug": "analyticbot", "path": "x", "uuid": "0" * 32}
                self.kwargs[name] = {
                    m["key"]: stand_in.get(m["converter"] or "str", "x")
                    for m in _KWARG.finditer(ROUTES[name])
                }
        return self.kwargs[name]

    def send(
        self,
        *,
        who: str,
        name: str,
        method: str,
        htmx: bool,
        net: bool,
        segment: int | None,
        segment_value: str,
        query: list[tuple[str, str]],
        form: list[tuple[str, str]],
    ) -> int:
        path = _path(name, self.valid_kwargs(name), segment, segment_value)
        if query:
            path += "?" + _query(query)
        client = self.client(who, net)
        if name in ("login", "logout"):  # public; and they change the session: a fresh client
            client = self.client("anonymous", net)
            del self.clients["anonymous", net]
        headers = {"HX-Request": "true"} if htmx else {}
        if method == "GET":
            response = client.get(path, headers=headers)
        else:
            body = _query(form)
            response = client.post(
                path, body, content_type="application/x-www-form-urlencoded", headers=headers
            )
        assert response.status_code < 500, (who, method, path, form, response.status_code)
        return response.status_code


@pytest.fixture
def walk(viewer: Any, engineer: Any, lead: Any, admin_user: Any, outsider: Any) -> Walk:
    make_database()
    return Walk(
        {
            "viewer": viewer,
            "engineer": engineer,
            "lead": lead,
            "admin_user": admin_user,
            "outsider": outsider,
        }
    )


def _path(name: str, kwargs: dict[str, Any], segment: int | None, value: str) -> str:
    """The URL path, with the ``segment``-th kwarg replaced by the (encoded) hostile value."""
    keys_in_order = [m["key"] for m in _KWARG.finditer(ROUTES[name])]
    target = None
    if keys_in_order and segment is not None:
        target = keys_in_order[segment % len(keys_in_order)]

    def fill(match: re.Match[str]) -> str:
        key = match["key"]
        return value if key == target else quote(str(kwargs[key]), safe="")

    return "/" + _KWARG.sub(fill, ROUTES[name])


def _query(items: list[tuple[str, str]]) -> str:
    return "&".join(f"{k}={v}" for k, v in items)


# Every parameter of every URL takes each of these in turn, as the admin (whom no role check
# stops), so a value meets the one field that chokes on it; with htmx or not (some parameters,
# like the run page's ``step``, are read only by the htmx fragment).
SWEEP = [
    (_encode(value), htmx)
    for value, htmx in (
        ("a\x00b", True),
        (b"\xff" + "\ud800".encode("utf-8", "surrogatepass"), False),
        ("99999999999999999999999", True),
        ("\u00b2", False),
        ("9" * 5000, True),
        ("x" * 3000, False),
        ("s3://[bucket", True),
        ("9999-12-31", False),
    )
]
# Per converter: what gets past it and what does not.
SEGMENT_SWEEP = {
    "int": ("99999999999999999999999", "9" * 5000),
    "slug": ("%00%FF",),
    "str": ("%00", "%FF%ED%A0%80", "9" * 5000, "heads", "0017%40head", "..%2F..%2Fetc"),
}


def _examples(test: Any) -> Any:
    """Every URL meets the classic cases, whatever the random draw: SWEEP in every parameter at
    once (query and form), each path segment's SEGMENT_SWEEP, and the request of the review (a
    NUL ``step`` on the run page's htmx poll) as each role, with and without the net."""
    for name in NAMES:
        for value, htmx in SWEEP:
            for method in METHODS[name]:
                everywhere = [(parameter, value) for parameter in PARAMETERS]
                case = {"method": method, "htmx": htmx, "query": everywhere}
                case["form"] = everywhere if method == "POST" else []
                test = example(
                    who="admin_user", name=name, net=False, segment=None, segment_value="", **case
                )(test)
        for segment, match in enumerate(_KWARG.finditer(ROUTES[name])):
            for value in SEGMENT_SWEEP.get(match["converter"] or "str", SEGMENT_SWEEP["str"]):
                test = example(
                    who="admin_user",
                    name=name,
                    method=METHODS[name][0],
                    htmx=False,
                    net=False,
                    segment=segment,
                    segment_value=value,
                    query=[],
                    form=[],
                )(test)
    for who in ROLES:
        for net in (True, False):
            test = example(
                who=who,
                name="run-detail",
                method="GET",
                htmx=True,
                net=net,
                segment=None,
                segment_value="",
                query=[("step", "%00")],
                form=[],
            )(test)
    return test


@hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@_examples
@given(
    who=st.sampled_from(ROLES),
    name=st.sampled_from(NAMES),
    method=st.sampled_from(["GET", "POST"]),
    htmx=st.booleans(),
    net=st.booleans(),
    segment=st.none() | st.integers(min_value=0, max_value=5),
    segment_value=hostile,
    query=pairs,
    form=pairs,
)
def test_no_hostile_input_makes_a_500(
    walk, who, name, method, htmx, net, segment, segment_value, query, form
):
    walk.send(
        who=who,
        name=name,
        method=method,
        htmx=htmx,
        net=net,
        segment=segment,
        segment_value=segment_value,
        query=query,
        form=form,
    )
