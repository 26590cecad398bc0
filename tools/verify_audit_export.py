#!/usr/bin/env python3
"""Check a Runway audit export (the JSON one) without Runway: Python's standard library only.

    python tools/verify_audit_export.py runway-audit-2026-01-01_2026-01-31.json

For every event it recomputes sha256 over the event's fields exactly as Runway's
``dashboard/audit/chain.py`` (``canonical()``) does: the event without its "hash", as JSON with
keys sorted, separators "," and ":", non-ASCII as itself, UTF-8. Then it checks the links:
where two events in the file have consecutive ids, the later one's "prev" must be the earlier
one's hash. A filtered export leaves events out, so other neighbours may not link (a gap); a
complete export (meta.complete) must have none, start at the genesis value and end at
meta.chain_head.

Prints ``OK`` with the count, or ``BROKEN at event #N`` with the reason. Exit status: 0 intact,
1 broken, 2 the file is not a readable export. The file is read as a stream: a million events
take flat memory.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

GENESIS = "0" * 64
# What canonical() hashes, under the names it uses ("prev" is the previous event's hash).
FIELDS = frozenset(
    {
        "id",
        "time",
        "actor_id",
        "actor",
        "action",
        "object_type",
        "object_id",
        "object",
        "details",
        "prev",
    }
)


class NotAnExport(Exception):
    """The file is not a complete Runway audit export."""


class Broken(Exception):
    def __init__(self, event_id: object, reason: str) -> None:
        super().__init__(f"BROKEN at event #{event_id}: {reason}")


def event_hash(event: dict[str, Any]) -> str:
    body = {name: event[name] for name in FIELDS}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Result:
    count: int = 0
    links: int = 0
    gaps: int = 0
    first_gap: object = None  # the id of the first event whose predecessor is not in the file
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    declared_count: int | None = None


def check_event(event: Any, before: dict[str, Any] | None, result: Result) -> None:
    if not isinstance(event, dict) or "id" not in event:
        raise NotAnExport(f"event {result.count + 1} is not an object with an id")
    event_id = event["id"]
    missing, extra = FIELDS - event.keys(), event.keys() - FIELDS - {"hash"}
    if missing or "hash" not in event:
        raise Broken(event_id, f"fields missing: {sorted(missing | ({'hash'} - event.keys()))}")
    if extra:
        raise Broken(event_id, f"fields that Runway does not write: {sorted(extra)}")
    if event_hash(event) != event["hash"]:
        raise Broken(event_id, "its content does not match its hash (edited)")
    if not isinstance(event_id, int):
        raise Broken(event_id, "its id is not a whole number")
    complete = bool(result.meta.get("complete"))  # known here when "meta" comes first
    if before is None:
        if event["prev"] != GENESIS:
            result.gaps, result.first_gap = 1, event_id
    else:
        if event_id <= before["id"]:
            raise Broken(event_id, f"out of order: it comes after event #{before['id']}")
        if event["prev"] == before["hash"]:
            result.links += 1
        elif event_id == before["id"] + 1 or event["prev"] == GENESIS or complete:
            raise Broken(
                event_id,
                f"its prev does not match the hash of event #{before['id']} before it "
                "(an event was changed, removed or inserted)",
            )
        else:
            result.gaps += 1
            if result.first_gap is None:
                result.first_gap = event_id
    result.count += 1
    if result.first is None:
        result.first = event


def verify(stream: IO[str]) -> Result:
    result = Result()
    seen: set[str] = set()
    for key, value in _Reader(stream).members():
        seen.add(key)
        if key == "meta":
            if not isinstance(value, dict):
                raise NotAnExport('"meta" is not an object')
            result.meta = value
        elif key == "count":
            result.declared_count = value
        elif key == "events":
            if not isinstance(value, Iterator):
                raise NotAnExport('"events" is not an array')
            for event in value:
                check_event(event, result.last, result)
                result.last = event
    if not {"meta", "events"} <= seen:
        raise NotAnExport('a Runway audit export has "meta" and "events"')
    _check_whole(result)
    return result


def _check_whole(result: Result) -> None:
    if result.declared_count is not None and result.declared_count != result.count:
        last_id = result.last["id"] if result.last else "-"
        raise Broken(
            last_id, f"the file says it holds {result.declared_count} events but has {result.count}"
        )
    head = result.meta.get("chain_head") or None
    if result.meta.get("complete"):
        if result.first_gap is not None:
            raise Broken(
                result.first_gap,
                "events are missing before it (its prev is not the event before it), "
                "yet the export says it is the complete trail",
            )
        if head and (result.last is None or result.last["hash"] != head.get("hash")):
            last_id = result.last["id"] if result.last else "-"
            raise Broken(last_id, f"the complete trail should end at chain head #{head.get('id')}")
    if head and result.last and result.last["id"] > head.get("id", 0):
        raise Broken(result.last["id"], f"it is newer than the chain head #{head.get('id')}")


class _Reader:
    """Just enough streaming JSON to walk the top-level object and its "events" array one
    element at a time; everything else is decoded whole."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.buffer = ""
        self.pos = 0
        self.eof = False
        self.decoder = json.JSONDecoder()

    def _fill(self) -> None:
        chunk = self.stream.read(1 << 16)
        self.eof = not chunk
        self.buffer = self.buffer[self.pos :] + chunk
        self.pos = 0

    def _peek(self) -> str:
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer) or self.eof:
                return self.buffer[self.pos : self.pos + 1]
            self._fill()

    def _expect(self, char: str) -> None:
        if self._peek() != char:
            found = self._peek() or "the end of the file"
            raise NotAnExport(f"expected {char!r}, found {found!r} (a cut-off download?)")
        self.pos += 1

    def _value(self) -> Any:
        self._peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise NotAnExport(f"not valid JSON: {exc}") from None
                self._fill()
                continue
            if end == len(self.buffer) and not self.eof:  # a number may go on in the next chunk
                self._fill()
                continue
            self.pos = end
            return value

    def members(self) -> Iterator[tuple[str, Any]]:
        self._expect("{")
        if self._peek() == "}":
            return
        while True:
            key = self._value()
            if not isinstance(key, str):
                raise NotAnExport("not a JSON object")
            self._expect(":")
            if key == "events" and self._peek() == "[":
                yield key, self._elements()
            else:
                yield key, self._value()
            if self._peek() == ",":
                self.pos += 1
                continue
            self._expect("}")
            if self._peek():
                raise NotAnExport("data after the end of the document")
            return

    def _elements(self) -> Iterator[Any]:
        self._expect("[")
        if self._peek() == "]":
            self.pos += 1
            return
        while True:
            yield self._value()
            if self._peek() == ",":
                self.pos += 1
                continue
            self._expect("]")
            return


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: verify_audit_export.py EXPORT.json", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as stream:
            result = verify(stream)
    except Broken as broken:
        print(broken)
        return 1
    except (NotAnExport, OSError, UnicodeDecodeError) as exc:
        print(f"cannot check {argv[1]}: {exc}", file=sys.stderr)
        return 2
    head = result.meta.get("chain_head") or {}
    kind = "the complete trail" if result.meta.get("complete") else "a filtered export"
    print(
        f"OK: {result.count} events ({kind}), {result.links} links checked, "
        f"{result.gaps} gaps where the filter left events out."
    )
    if head:
        print(f"Chain head when exported: #{head.get('id')} {head.get('hash')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
