"""Records a provider keeps beside its tasks, looked up by a key of their own (Dify's tool files
by file id, its uploads, its stop ids): bounded in memory, shared through Redis with the tasks;
and its numberings (:class:`Counter`).

A record is written once and never changed, so a worker may answer from its own copy; with a
shared store the records a request names (:meth:`Provider.shelf_keys`) are loaded before its
handler runs and new ones written back before its answer leaves, as tasks are.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._store_redis import Session

__all__ = ["Counter", "Shelf"]

_MISSING = object()


def _same(value: Any) -> Any:
    return value


class Shelf:
    """A bounded map of records: ``limit`` of them at most, the oldest dropped first.

    ``budget`` bounds the bytes of ``bytes`` records too (uploads). ``encode``/``decode`` turn a
    record into JSON and back for a shared store (an :class:`ImageSpec` as a list, say).

    >>> shelf = Shelf("files", limit=2)
    >>> shelf["a"] = 1; shelf["b"] = 2; shelf["c"] = 3
    >>> ("a" in shelf, shelf.get("c"))
    (False, 3)
    """

    def __init__(self, name: str, *, limit: int, budget: int | None = None,
                 encode: Callable[[Any], Any] | None = None,
                 decode: Callable[[Any], Any] | None = None) -> None:
        self.name = name
        self._limit = limit
        self._budget = budget
        self._encode = encode or _same
        self._decode = decode or _same
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._bytes = 0
        #: Set by a shared store: returns the request's session (or None outside a request).
        self.session: Callable[[], Session | None] | None = None

    def get(self, key: str, default: Any = None) -> Any:
        session = self.session() if self.session is not None else None
        if session is not None:
            loaded = session.shelf.get((self.name, key), _MISSING)
            if loaded is not _MISSING:
                return default if loaded is None else loaded
        return self._items.get(key, default)

    def __contains__(self, key: str) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __setitem__(self, key: str, value: Any) -> None:
        self._keep(key, value)
        session = self.session() if self.session is not None else None
        if session is not None:
            session.shelf[(self.name, key)] = value
            session.shelved.append((self.name, key, value))

    def _keep(self, key: str, value: Any) -> None:
        old = self._items.pop(key, None)
        if isinstance(old, bytes):
            self._bytes -= len(old)
        self._items[key] = value
        if isinstance(value, bytes):
            self._bytes += len(value)
        while len(self._items) > self._limit or (
            self._budget is not None and self._bytes > self._budget and len(self._items) > 1
        ):
            _, dropped = self._items.popitem(last=False)
            if isinstance(dropped, bytes):
                self._bytes -= len(dropped)

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    # --- a shared store's side --------------------------------------------------------

    def dump(self, value: Any) -> bytes:
        """A record as Redis holds it: raw bytes, or JSON."""
        if isinstance(value, bytes):
            return b"b" + value
        return b"j" + json.dumps(self._encode(value), separators=(",", ":")).encode()

    def load(self, key: str, raw: bytes | None) -> Any:
        """A record read from Redis (None: there is none); kept in this worker's copy too."""
        if raw is None:
            return None
        value = raw[1:] if raw[:1] == b"b" else self._decode(json.loads(raw[1:]))
        self._keep(key, value)
        return value


class Counter:
    """A provider's numbering for the whole mock (Dify's run ``sequence_number``): 1, 2, 3...

    ``next(counter)`` draws the next number. With a shared store, ``await counter.reserve()``
    (in the handler, once the number is sure to be used) takes it from Redis for this request,
    so every worker numbers from one sequence.

    >>> counter = Counter("runs")
    >>> [next(counter), next(counter)]
    [1, 2]
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._last = 0
        #: Set by a shared store: the request's session, and how a number is taken from Redis.
        self.session: Callable[[], Session | None] | None = None
        self.take: Callable[[str], Awaitable[int]] | None = None

    async def reserve(self) -> None:
        session = self.session() if self.session is not None else None
        if session is not None and self.take is not None:
            session.extra.setdefault("count:" + self.name, []).append(await self.take(self.name))

    def __iter__(self) -> Counter:
        return self

    def __next__(self) -> int:
        session = self.session() if self.session is not None else None
        reserved = session.extra.get("count:" + self.name) if session is not None else None
        if reserved:
            return int(reserved.pop(0))
        self._last += 1
        return self._last

    def reset(self) -> None:
        self._last = 0
