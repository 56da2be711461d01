"""Redis adapter: the compiled state of every shard, and the leases that say who writes it.

Keys of shard `s` carry `{s}` as a hash tag, so one shard's keys sit in one Redis Cluster slot and its
commit stays one legal transaction there:

    sg:{s}:src:<unit>  hash  source -> contribution (msgpack)   the compiler's input for one unit (none
                                                                 for a TLS Secret: its delta is all of it)
    sg:{s}:frag        hash  unit -> fragment (msgpack)          what the pushers relay
    sg:{s}:fhash       hash  unit -> fragment content hash       "unchanged" without reading fragments
    sg:{s}:rev         int   the shard's revision: +1 per commit that changed a fragment
    sg:{s}:log         stream id <rev>-0: units changed in that revision + their trace contexts (capped)
    sg:{s}:seq         int   last JetStream sequence applied: a redelivered delta is a no-op
    sg:{s}:lease       str   the owning compiler's token, with a TTL
    sg:members         zset  live compiler ids, scored by heartbeat expiry (ms, Redis clock)

A commit is one Lua script that checks the lease is still ours and then writes everything, so a compiler
that lost its lease (a pause longer than the TTL, a partition) can never overwrite its successor's work.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shardgate.adapters.errors import LeaseLost, TransientError, UnloadedSources
from shardgate.model import Wire

log = logging.getLogger(__name__)

TRANSIENT_REDIS = (RedisConnectionError, RedisTimeoutError, ConnectionResetError, OSError)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: lease, rev, seq, frag, fhash, log, then one contributions hash per unit.
# ARGV: token, new revision ("" = none), seq, log cap, log units, log traces, then the contributions
# hashes assumed empty (count, then their indexes in KEYS), the fragment sets (count, then
# unit/bytes/hash triples), the fragment deletions (count, then units), then for each contributions
# hash its sets (count, then source/value pairs) and deletions (count, then sources).
# The lease check, the assumed-empty check and the XADD (the only call that can fail on bad input) come
# before any write, so a refused commit writes nothing.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('LEASE not held') end
local i = 7
local n = tonumber(ARGV[i]); i = i + 1
local unread = {}
for _ = 1, n do
  if redis.call('EXISTS', KEYS[tonumber(ARGV[i])]) == 1 then unread[#unread + 1] = ARGV[i] end
  i = i + 1
end
if #unread > 0 then return redis.error_reply('UNREAD ' .. table.concat(unread, ' ')) end
local rev = ARGV[2]
if rev ~= '' then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[4], rev .. '-0', 'u', ARGV[5], 't', ARGV[6])
  redis.call('SET', KEYS[2], rev)
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 2])
  i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HDEL', KEYS[4], ARGV[i])
  redis.call('HDEL', KEYS[5], ARGV[i])
  i = i + 1
end
for key = 7, #KEYS do
  n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    redis.call('HSET', KEYS[key], ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    redis.call('HDEL', KEYS[key], ARGV[i])
    i = i + 1
  end
end
redis.call('SET', KEYS[3], ARGV[3])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def k(shard: int, name: str) -> str:
    return f"sg:{{{shard}}}:{name}"


def src_key(shard: int, unit: str) -> str:
    return f"sg:{{{shard}}}:src:{unit}"


MEMBERS = "sg:members"


@dataclass(slots=True)
class ShardState:
    revision: int
    seq: int
    hashes: dict[str, str]  # unit -> fragment hash


@dataclass(frozen=True, slots=True)
class LogEntry:
    revision: int
    units: tuple[str, ...]
    traces: dict[str, str]


@dataclass(slots=True)
class Commit:
    """One batch's effect on one shard, written atomically."""

    seq: int  # last stream sequence the batch covers
    contributions: dict[str, dict[str, Wire | None]] = field(default_factory=dict)  # unit -> source -> wire
    fragments: dict[str, tuple[bytes, str] | None] = field(default_factory=dict)  # unit -> (bytes, hash)
    revision: int | None = None  # the new revision, when any fragment changed
    traces: dict[str, str] = field(default_factory=dict)
    # Units of `contributions` planned as if Redis held no contributions for them (the worker never read
    # them: a brand-new unit, the usual case). The commit checks it and is refused if not.
    assumed_empty: list[str] = field(default_factory=list)


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


class ShardStore:
    def __init__(self, client: aioredis.Redis, log_cap: int = 10_000) -> None:
        self.r = client
        self.log_cap = log_cap
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._commit = client.register_script(_COMMIT)

    @classmethod
    def from_url(cls, url: str, log_cap: int = 10_000) -> ShardStore:
        return cls(aioredis.Redis.from_url(url, socket_timeout=10, health_check_interval=10), log_cap)

    async def close(self) -> None:
        await self.r.aclose()

    # -- membership and leases ---------------------------------------------------------------------

    async def _now_ms(self) -> int:
        sec, usec = await self.r.time()
        return int(sec) * 1000 + int(usec) // 1000

    async def heartbeat(self, member: str, ttl_ms: int) -> list[str]:
        """Refresh this member and return the live members, sorted."""
        now = await self._now_ms()
        async with self.r.pipeline(transaction=False) as p:
            p.zadd(MEMBERS, {member: now + ttl_ms})
            p.zremrangebyscore(MEMBERS, "-inf", now)
            p.zrange(MEMBERS, 0, -1)
            res = await p.execute()
        return sorted(m.decode() if isinstance(m, bytes) else m for m in res[2])

    async def leave(self, member: str) -> None:
        await self.r.zrem(MEMBERS, member)

    async def acquire(self, shard: int, token: str, ttl_ms: int) -> bool:
        return bool(await self.r.set(k(shard, "lease"), token, nx=True, px=ttl_ms))

    async def renew(self, shard: int, token: str, ttl_ms: int) -> bool:
        return bool(await self._renew(keys=[k(shard, "lease")], args=[token, ttl_ms]))

    async def renew_many(self, shards: Sequence[int], token: str, ttl_ms: int) -> list[bool]:
        """`renew` for every shard in one pipelined round trip (a compiler renews all it holds each tick:
        one round trip each cost a connection and a syscall pair per shard per second)."""
        if not shards:
            return []
        pipe = self.r.pipeline(transaction=False)
        for shard in shards:
            await self._renew(keys=[k(shard, "lease")], args=[token, ttl_ms], client=pipe)
        return [bool(v) for v in await pipe.execute()]

    async def release(self, shard: int, token: str) -> None:
        await self._release(keys=[k(shard, "lease")], args=[token])

    async def lease_holder(self, shard: int) -> str | None:
        v = await self.r.get(k(shard, "lease"))
        return v.decode() if isinstance(v, bytes) else v

    # -- compiler side ---------------------------------------------------------------------------------

    async def load_shard(self, shard: int) -> ShardState:
        async with self.r.pipeline(transaction=True) as p:
            p.get(k(shard, "rev"))
            p.get(k(shard, "seq"))
            p.hgetall(k(shard, "fhash"))
            rev, seq, hashes = await p.execute()
        return ShardState(int(rev or 0), int(seq or 0), {u.decode(): h.decode() for u, h in hashes.items()})

    async def load_contributions(self, shard: int, units: Iterable[str]) -> dict[str, dict[str, Wire]]:
        units = list(units)
        async with self.r.pipeline(transaction=False) as p:
            for unit in units:
                p.hgetall(src_key(shard, unit))
            rows = await p.execute()
        return {
            unit: {src.decode(): msgpack.unpackb(w, raw=False) for src, w in row.items()}
            for unit, row in zip(units, rows, strict=True)
        }

    async def commit(self, shard: int, token: str, c: Commit) -> None:
        """Write one batch atomically, only while `token` still holds the shard's lease.

        One Lua script (one round trip) checks the lease and writes everything. WATCH/MULTI cannot do
        this: the owner's own lease renewal (PEXPIRE) touches the watched key and aborted commits that
        were perfectly legal. The same script checks that the units of `c.assumed_empty` have no stored
        contributions, and raises `UnloadedSources` with those that do, having written nothing.
        """
        frag_sets = [(u, f) for u, f in c.fragments.items() if f is not None]
        frag_dels = [u for u, f in c.fragments.items() if f is None]
        keys = [k(shard, n) for n in ("lease", "rev", "seq", "frag", "fhash", "log")]
        args: list[bytes | str | int] = [
            token,
            "" if c.revision is None else c.revision,
            c.seq,
            self.log_cap,
            _pack(sorted(c.fragments)),
            _pack(c.traces),
        ]
        units = list(c.contributions)
        first = len(keys) + 1  # Lua's KEYS index of the first contributions hash
        index = {unit: first + j for j, unit in enumerate(units)}
        args.append(len(c.assumed_empty))
        args += [index[unit] for unit in c.assumed_empty]
        args.append(len(frag_sets))
        for unit, (body, digest) in frag_sets:
            args += [unit, body, digest]
        args.append(len(frag_dels))
        args += frag_dels
        for unit, sources in c.contributions.items():
            keys.append(src_key(shard, unit))
            sets = [(src, _pack(w)) for src, w in sources.items() if w is not None]
            dels = [src for src, w in sources.items() if w is None]
            args.append(len(sets))
            for src, packed in sets:
                args += [src, packed]
            args.append(len(dels))
            args += dels
        try:
            await self._commit(keys=keys, args=args)
        except ResponseError as exc:
            if "LEASE" in str(exc):
                raise LeaseLost(f"shard {shard}: lease not held by {token}") from exc
            if str(exc).startswith("UNREAD "):
                unread = [units[int(i) - first] for i in str(exc).split()[1:]]
                raise UnloadedSources(shard, unread) from exc
            raise
        except TRANSIENT_REDIS as exc:
            raise TransientError(f"shard {shard}: commit failed: {exc}") from exc

    # -- pusher side -------------------------------------------------------------------------------------

    async def revisions(self, shards: int) -> list[int]:
        async with self.r.pipeline(transaction=False) as p:
            for s in range(shards):
                p.get(k(s, "rev"))
            return [int(v or 0) for v in await p.execute()]

    async def snapshot(self, shard: int) -> tuple[int, dict[str, bytes]]:
        """The shard's revision and every fragment, read atomically."""
        async with self.r.pipeline(transaction=True) as p:
            p.get(k(shard, "rev"))
            p.hgetall(k(shard, "frag"))
            rev, frags = await p.execute()
        return int(rev or 0), {u.decode(): f for u, f in frags.items()}

    async def fragments(self, wanted: Mapping[int, Iterable[str]]) -> dict[int, dict[str, bytes | None]]:
        """The current fragments of some units of several shards (None: deleted), in one round trip: one
        HMGET per shard, each atomic on its own (a reader needs no instant across shards, and a later
        notice or the revision check brings anything committed meanwhile)."""
        asked = {shard: units for shard, u in wanted.items() if (units := list(u))}
        out: dict[int, dict[str, bytes | None]] = {shard: {} for shard in wanted}
        if not asked:
            return out
        async with self.r.pipeline(transaction=False) as p:
            for shard, units in asked.items():
                p.hmget(k(shard, "frag"), units)
            rows = await p.execute()
        for (shard, units), row in zip(asked.items(), rows, strict=True):
            out[shard] = dict(zip(units, row, strict=True))
        return out

    async def log_since(self, shard: int, revision: int) -> list[LogEntry] | None:
        """Entries after `revision`, or None when the log no longer reaches back that far. The log and
        the shard's revision are read together: a commit landing between the two reads made an empty
        read look like a log that had been trimmed, and cost a whole snapshot."""
        async with self.r.pipeline(transaction=True) as p:
            p.xrange(k(shard, "log"), min=f"{revision + 1}-0", max="+")
            p.get(k(shard, "rev"))
            rows, current_raw = await p.execute()
        entries = [
            LogEntry(
                int(entry_id.decode().partition("-")[0]),
                tuple(msgpack.unpackb(f[b"u"], raw=False)),
                msgpack.unpackb(f[b"t"], raw=False),
            )
            for entry_id, f in rows
        ]
        if entries and entries[0].revision != revision + 1:
            return None
        if not entries and int(current_raw or 0) > revision:
            return None
        return entries
