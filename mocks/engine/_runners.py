"""A queue of requests sharing a fixed number of runners, kept in Redis for every worker.

What fal's queue needs when several workers take its requests (``--store redis://``): one
submission order (a shared sequence), each request's start fixed when it is submitted (the
first free runner, first in first out), ``queue_position`` counted over every worker's
requests, and with ``--lifecycle polls`` a runner taken by the poll that leaves the queue. Each
step is one Lua script, atomic in Redis: two workers never give one runner to two requests.
Nothing is scanned on the hot path: a position is a ``ZRANK`` and a ``ZCOUNT``.

Keys, under the mock's namespace and ``q:<name>:``:

==========  ==================================================================
``seq``     the submission counter
``free``    sorted set runner -> when it is free (time-driven lifecycles)
``last``    the latest start given (starts follow submission order)
``starts``  sorted set seq -> start: requests scheduled to start (a position is a rank)
``timeouts`` sorted set seq -> end of wait: requests that time out before they would start
``queued``  sorted set seq -> seq: requests still queued (``--lifecycle polls``)
``running`` sorted set request id -> expiry: requests holding a runner (``--lifecycle polls``)
``req``     hash seq -> what its start was computed from (id, ready, run, timeout, created,
            hold): a cancel recomputes the starts of the requests behind it from these
==========  ==================================================================

A cancel (time-driven) runs one script that takes the request out of the line and gives every
request still waiting its start again, as the worker's own queue does; the provider then
rewrites the timelines that moved (and tells the other workers).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["SharedRunners", "member"]

#: Stands for "forever" and "never" in Redis scores (Lua 5.1 reads no "inf").
FAR = 1e300
#: Provider seconds a started request's entry is kept after its start (workers' clocks differ
#: by a little: an entry is only read while its request, or one behind it, still waits).
KEEP = 3600.0


def member(seq: int) -> str:
    """A sequence number as a sorted-set member: fixed width, so ranks follow the numbers."""
    return f"{seq:016d}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _num(value: float) -> str:
    return repr(max(min(value, FAR), -FAR))


_SCHEDULE = """
local seq = redis.call('INCR', KEYS[1])
local me = string.format('%016d', seq)
local start = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[3]) or '-1e300')
if last > start then start = last end
local runners = tonumber(ARGV[4])
local slot = nil
if runners > 0 then
  for i = redis.call('ZCARD', KEYS[2]) + 1, runners do redis.call('ZADD', KEYS[2], -1e300, 'r' .. i) end
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  slot = first[1]
  if tonumber(first[2]) > start then start = tonumber(first[2]) end
end
local created, timeout, now = tonumber(ARGV[5]), tonumber(ARGV[3]), tonumber(ARGV[7])
local cut = '(' .. (now - tonumber(ARGV[8]))
for _, key in ipairs({KEYS[4], KEYS[5]}) do
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', cut, 'LIMIT', 0, 64)) do
    redis.call('ZREM', key, old)
    redis.call('HDEL', KEYS[6], old)
  end
end
redis.call('HSET', KEYS[6], me, table.concat({ARGV[9], ARGV[1], ARGV[2], ARGV[3], ARGV[5], ARGV[6]}, '|'))
local waiting = redis.call('ZCOUNT', KEYS[5], '(' .. now, '+inf')
if timeout >= 0 and start - created > timeout then
  redis.call('ZADD', KEYS[5], created + timeout, me)
  return {seq, string.format('%.17g', start), 1, redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf') + waiting}
end
if slot then
  local run = tonumber(ARGV[2])
  local busy = start + run
  if run < 0 then busy = tonumber(ARGV[6]) end
  redis.call('ZADD', KEYS[2], busy, slot)
end
redis.call('SET', KEYS[3], string.format('%.17g', start))
redis.call('ZADD', KEYS[4], start, me)
local ahead = redis.call('ZRANK', KEYS[4], me) - redis.call('ZCOUNT', KEYS[4], '-inf', now)
if ahead < 0 then ahead = 0 end
return {seq, string.format('%.17g', start), 0, ahead + waiting}
"""

# The requests ahead of ARGV[1] still queued at ARGV[2]: scheduled to start later (a rank), and
# waiting out a timeout. A request not scheduled (it times out itself) counts those one by one.
# A cancel: ARGV[1] leaves the line; every request still waiting gets its start again (first
# in, first out, the first free runner, never before now). Returns {id, start, timed out} of
# each request whose start moved.
_RESCHEDULE = """
local now, runners = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
local function req(m)
  local raw = redis.call('HGET', KEYS[5], m)
  if not raw then return nil end
  local id, ready, run, timeout, created, hold = string.match(raw, '^(.-)|(.-)|(.-)|(.-)|(.-)|(.-)$')
  return {id = id, ready = tonumber(ready), run = tonumber(run), timeout = tonumber(timeout),
          created = tonumber(created), hold = tonumber(hold)}
end
local busy, last = {}, -1e300
local started = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'WITHSCORES')
for i = 1, #started, 2 do
  local r, s = req(started[i]), tonumber(started[i + 1])
  if r then
    local e = s + r.run
    if r.run < 0 then e = r.hold end
    if e > now then busy[#busy + 1] = e end
    if s > last then last = s end
  end
end
local waiting = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf')
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. now, '+inf')) do waiting[#waiting + 1] = m end
table.sort(waiting)
local free = {}
if runners > 0 then
  table.sort(busy)
  free = busy
  for i = #busy + 1, runners do free[i] = now end
end
local moved = {}
for _, m in ipairs(waiting) do
  local r = req(m)
  if r then
    local start = math.max(r.ready, last, now)
    local slot = nil
    if runners > 0 then
      slot = 1
      for i = 2, #free do if free[i] < free[slot] then slot = i end end
      if free[slot] > start then start = free[slot] end
    end
    local before = redis.call('ZSCORE', KEYS[3], m)
    redis.call('ZREM', KEYS[3], m)
    redis.call('ZREM', KEYS[4], m)
    if r.timeout >= 0 and start - r.created > r.timeout then
      redis.call('ZADD', KEYS[4], r.created + r.timeout, m)
      if before then moved[#moved + 1] = {r.id, string.format('%.17g', start), 1} end
    else
      if slot then
        if r.run < 0 then free[slot] = r.hold else free[slot] = start + r.run end
      end
      last = start
      redis.call('ZADD', KEYS[3], start, m)
      if (not before) or tonumber(before) ~= start then
        moved[#moved + 1] = {r.id, string.format('%.17g', start), 0}
      end
    end
  end
end
redis.call('DEL', KEYS[1])
for i, f in ipairs(free) do redis.call('ZADD', KEYS[1], f, 'r' .. i) end
redis.call('SET', KEYS[2], string.format('%.17g', last))
return moved
"""

_POSITION = """
local now = tonumber(ARGV[2])
local ahead = 0
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
if rank then
  ahead = rank - redis.call('ZCOUNT', KEYS[1], '-inf', now)
  if ahead < 0 then ahead = 0 end
else
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
    if m < ARGV[1] then ahead = ahead + 1 end
  end
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')) do
  if m < ARGV[1] then ahead = ahead + 1 end
end
return ahead
"""

_NEXT_START = """
local first = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if first[1] and first[1] < ARGV[1] then return first[2] end
return false
"""

_ENQUEUE = """
local seq = redis.call('INCR', KEYS[1])
if ARGV[1] == '1' then redis.call('ZADD', KEYS[2], seq, string.format('%016d', seq)) end
return {seq, redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. seq)}
"""

# Leave the queue on a free runner: 1 taken (or held already), 0 every runner is busy.
_TAKE = """
if tonumber(ARGV[2]) > 0 and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
end
if tonumber(ARGV[2]) > 0 then redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1]) end
redis.call('ZREM', KEYS[2], ARGV[5])
return 1
"""


class SharedRunners:
    """One runner queue in Redis (see the module's docstring); made by :meth:`Shared.runners`."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._key = {name: f"{prefix}{name}" for name in
                     ("seq", "free", "last", "starts", "timeouts", "queued", "running", "req")}
        self._schedule = client.register_script(_SCHEDULE)
        self._position = client.register_script(_POSITION)
        self._next_start = client.register_script(_NEXT_START)
        self._enqueue = client.register_script(_ENQUEUE)
        self._take = client.register_script(_TAKE)
        self._reschedule = client.register_script(_RESCHEDULE)

    async def schedule(self, request_id: str, *, created: float, ready_at: float, run: float,
                       timeout: float | None, runners: int | None, hold_until: float,
                       now: float) -> tuple[int, float, bool, int]:
        """Submit a time-driven request: (seq, start, times out before starting, position).

        It starts at ``ready_at`` or later: after every earlier start, on the first free runner,
        which it then holds for ``run`` (an endless run: until ``hold_until``).
        """
        k = self._key
        seq, start, timed_out, position = await self._schedule(
            keys=[k["seq"], k["free"], k["last"], k["starts"], k["timeouts"], k["req"]],
            args=[_num(ready_at), -1 if math.isinf(run) else _num(run),
                  -1 if timeout is None else _num(timeout), runners or 0, _num(created),
                  _num(hold_until), _num(now), KEEP, request_id])
        return int(seq), float(start), bool(int(timed_out)), int(position)

    async def position(self, seq: int, now: float) -> int:
        k = self._key
        return int(await self._position(keys=[k["starts"], k["timeouts"]], args=[member(seq), _num(now)]))

    async def next_start_ahead(self, seq: int, now: float) -> float:
        """When the next request ahead of ``seq`` starts (inf: none is waiting to)."""
        at = await self._next_start(keys=[self._key["starts"]], args=[member(seq), _num(now)])
        return math.inf if at is None else float(at)

    async def enqueue(self, *, queued: bool) -> tuple[int, int]:
        """A request of a poll-driven lifecycle: (seq, position); ``queued``: it waits in line."""
        k = self._key
        seq, position = await self._enqueue(keys=[k["seq"], k["queued"]], args=["1" if queued else "0"])
        return int(seq), int(position)

    async def queued_ahead(self, seq: int) -> int:
        return int(await self._client.zcount(self._key["queued"], "-inf", f"({seq}"))

    async def take(self, request_id: str, seq: int, *, runners: int | None, now: float,
                   expiry: float) -> bool:
        """Leave the queue on a runner if one is free (held until released or ``expiry``)."""
        k = self._key
        return bool(int(await self._take(keys=[k["running"], k["queued"]],
                                         args=[request_id, runners or 0, _num(now), _num(expiry),
                                               member(seq)])))

    async def release(self, request_id: str) -> None:
        await self._client.zrem(self._key["running"], request_id)

    async def cancel_and_reschedule(self, seq: int, *, now: float,
                                    runners: int | None) -> list[tuple[str, float, bool]]:
        """A time-driven request leaves the line: (id, start, times out) of each request behind
        it whose start moved (the caller rewrites their timelines)."""
        k = self._key
        moved = await self._reschedule(keys=[k["free"], k["last"], k["starts"], k["timeouts"], k["req"]],
                                       args=[member(seq), _num(now), runners or 0])
        return [(_text(rid), float(start), bool(int(out))) for rid, start, out in moved]

    async def cancel(self, request_id: str, seq: int) -> None:
        """A request leaves the line (and its runner, when poll-driven)."""
        k = self._key
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zrem(k["starts"], member(seq))
            pipe.zrem(k["timeouts"], member(seq))
            pipe.zrem(k["queued"], member(seq))
            pipe.zrem(k["running"], request_id)
            await pipe.execute()
