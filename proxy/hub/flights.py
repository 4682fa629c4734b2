"""Identical resolve GETs in flight at the same moment share one lookup.

Under load many clients ask for the same small file at once (every replica of a job pulls the
same `config.json`). Each lookup reads the database and the trust rules; done once per request
they queue on the database and the tail latency grows with the crowd (bench/pressure_bench.py).
The first request of a key (its raw path and the caller) leads: it looks up as usual and lands
what it found, a released blob or the redirect to a commit. Requests with the same key that
arrive while it is in flight take that answer. Nothing is kept once the leader lands: it is the
answer to a request still being made, never older than the request that receives it. A leader
that fails or finds something else (a file being fetched, a refusal) lands nothing, and its
followers make their own lookup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import web

from proxy.delivery import ReleasedBlob

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Redirect:
    """The 307 to a revision's commit URL."""

    location: str
    commit: str
    notice: str


Outcome = ReleasedBlob | Redirect | None


class Landing:
    """What a leader found; stays None unless the leader says."""

    __slots__ = ("outcome",)

    def __init__(self) -> None:
        self.outcome: Outcome = None


class Flights:
    def __init__(self) -> None:
        self._open: dict[Key, asyncio.Future[Outcome]] = {}

    async def follow(self, key: Key) -> Outcome:
        """The outcome of the lookup in flight for `key`; None when there is none (lead one)."""
        flight = self._open.get(key)
        if flight is None:
            return None
        return await asyncio.shield(flight)

    @contextmanager
    def lead(self, key: Key) -> Iterator[Landing]:
        """Register this request as the lookup for `key`; followers get what it lands."""
        if key in self._open:  # a follower whose leader landed nothing: look up alone
            yield Landing()
            return
        flight: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._open[key] = flight
        landing = Landing()
        try:
            yield landing
        finally:
            del self._open[key]
            flight.set_result(landing.outcome)


FLIGHTS = web.AppKey("flights", Flights)


def flights_of(request: web.Request) -> Flights:
    return request.app[FLIGHTS]
