"""Links from audit events to the pages of the objects they are about.

The audit app imports no other app (every app writes to it), so it cannot know where a run or a
backup is shown. Each app that has a page for its objects registers, in its ``AppConfig.ready()``,
a resolver for their ``object_type`` (the model name ``chain.record`` writes): given object ids,
it answers the URL of each object that still exists, in one query. :func:`links` then resolves a
page of events with one query per object type present, whatever the number of events. An event
whose object was deleted, or whose type has no page, gets no link.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.db.models import Model
from django.urls import reverse

from dashboard.audit.models import AuditEvent

__all__ = ["Resolver", "links", "register", "register_page"]

# (object ids) -> (id, URL) for those of them that exist and have a page.
Resolver = Callable[[list[int]], Iterable[tuple[int, str]]]
_resolvers: dict[str, Resolver] = {}


def register(object_type: str, resolver: Resolver) -> None:
    _resolvers[object_type] = resolver


def register_page(object_type: str, model: type[Model], url_name: str, *args: str) -> None:
    """The usual resolver: ``url_name`` reversed with the values of the fields ``args`` (paths
    as ``values_list`` takes them, "pk" for the object's own id) of each object, in one query.
    ``register_page("run", Run, "run-detail", "database__name", "pk")``."""

    def resolve(ids: list[int]) -> Iterable[tuple[int, str]]:
        for pk, *values in model._default_manager.filter(pk__in=ids).values_list("pk", *args):
            yield pk, reverse(url_name, args=values)

    register(object_type, resolve)


def registered() -> list[str]:
    return sorted(_resolvers)


def links(events: Iterable[AuditEvent]) -> dict[tuple[str, str], str]:
    """``{(object_type, object_id): url}`` for the events' objects that have a page."""
    wanted: dict[str, set[int]] = {}
    for event in events:
        if event.object_type in _resolvers and _is_id(event.object_id):
            wanted.setdefault(event.object_type, set()).add(int(event.object_id))
    found: dict[tuple[str, str], str] = {}
    for object_type, ids in sorted(wanted.items()):
        for pk, url in _resolvers[object_type](sorted(ids)):
            found[(object_type, str(pk))] = url
    return found


def _is_id(text: str) -> bool:
    """ASCII digits that fit a bigint, with no leading zero ("07" is not how an id is written)."""
    return text.isascii() and text.isdigit() and len(text) < 19 and text == str(int(text))
