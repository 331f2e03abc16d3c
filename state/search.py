"""The team library's search index: an inverted index of our own, per workspace, in Redis.

RediSearch would do this, but the deployment's Redis has no modules (`MODULE LIST`
answers an empty list on the Redis 7.0 we run and on most managed plans), so the
library keeps its own index: one sorted set per term (its entries' ids, scored by lock
time), and the workspace's feed of all entries. A search intersects the sets of its
terms (`ZINTERSTORE` into a scratch key) and walks the result newest first, skipping
entries made in conversations the viewer may not see; one script, one slot (every key
carries the workspace's hash tag). `bench.library_search` measures it at 10,000 entries.

Terms: each word (two characters or more) of the caption, the prompt and the idea;
`t:<target>`; `p:<word>` of the persona's name; `u:<user id>` and `n:<word>` of the
person who started it. A query is the same language: words, `target:`, `persona:` and
`by:` (a `<@U…>` mention, a user id or a name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from state._text import text
from state.keys import NO_TEAM, Keys
from state.library import LibraryEntry, PromptLibrary, parse_entry

_WORD_RE = re.compile(r"[^\W_]{2,}", re.UNICODE)
_USER_ID_RE = re.compile(r"^<?@?([UW][A-Z0-9]+)(?:\|[^>]*)?>?$")
# Words too common to narrow a search: a query of only these matches everything.
_STOP = frozenset(
    "an and are as at be by for from in into is it its of on or the this to with".split()
)
# A query names at most this many terms (each is one key of the script).
MAX_QUERY_TERMS = 12
SEARCH_PAGE_MAX = 50


def words(text_: str) -> list[str]:
    """Lowercased words of `text_`, in order, without stop words or duplicates."""
    out: dict[str, None] = {}
    for w in _WORD_RE.findall(text_.casefold()):
        if w not in _STOP:
            out.setdefault(w, None)
    return list(out)


def terms_of(entry: LibraryEntry) -> list[str]:
    """Every index term of a library entry (no duplicates, no spaces)."""
    draft = entry.locked.draft
    terms: dict[str, None] = {}
    for w in words(f"{draft.title} {draft.prompt_text} {entry.idea}"):
        terms.setdefault(w, None)
    terms.setdefault("t:" + entry.target.casefold(), None)
    for w in words(f"{entry.persona} {entry.persona_key or ''}"):
        terms.setdefault("p:" + w, None)
    if entry.user_id:
        terms.setdefault("u:" + entry.user_id, None)
    for w in words(entry.user_name or ""):
        terms.setdefault("n:" + w, None)
    return [t for t in terms if " " not in t]


def query_terms(query: str) -> list[str]:
    """The index terms a typed query asks for, e.g. `rain target:sora-2 by:<@U1>`."""
    terms: dict[str, None] = {}
    for token in query.split():
        field, sep, value = token.partition(":")
        field = field.casefold()
        if sep and value and field in {"target", "t"}:
            terms.setdefault("t:" + value.casefold(), None)
        elif sep and value and field in {"persona", "p"}:
            for w in words(value):
                terms.setdefault("p:" + w, None)
        elif sep and value and field in {"by", "person", "user"}:
            m = _USER_ID_RE.match(value)
            if m:
                terms.setdefault("u:" + m.group(1), None)
            else:
                for w in words(value):
                    terms.setdefault("n:" + w, None)
        else:
            for w in words(token):
                terms.setdefault(w, None)
    return list(terms)[:MAX_QUERY_TERMS]


# KEYS: feed, docs, channel-of, terms-of, channels, then the entry's term sets.
# ARGV: id, json, score (ms), channel ('' for none), then the terms (as KEYS[6..]).
_ADD = """
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
  redis.call('SADD', KEYS[5], ARGV[4])
end
local terms = {}
for i = 6, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[1])
  terms[#terms + 1] = ARGV[i - 1]
end
redis.call('HSET', KEYS[4], ARGV[1], table.concat(terms, ' '))
return 1
"""

# KEYS: feed, docs, channel-of, terms-of, then the entry's term sets. ARGV: id.
_DELETE = """
local existed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
for i = 5, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return existed
"""

# KEYS: feed, docs, channel-of, scratch, then the query's term sets.
# ARGV: offset, limit, then the channels whose entries the viewer may not see.
# Returns {more (0/1), {json, ...}}: `limit` visible entries newest first after `offset`.
_SEARCH = """
local hidden = {}
for i = 3, #ARGV do hidden[ARGV[i]] = true end
local nterms = #KEYS - 4
local walk = KEYS[1]
if nterms == 1 then
  walk = KEYS[5]
elseif nterms > 1 then
  local args = {KEYS[4], nterms}
  for i = 5, #KEYS do args[#args + 1] = KEYS[i] end
  args[#args + 1] = 'AGGREGATE'
  args[#args + 1] = 'MAX'
  redis.call('ZINTERSTORE', unpack(args))
  walk = KEYS[4]
end
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local out, seen, start, page, more = {}, 0, 0, 256, 0
while more == 0 do
  local ids = redis.call('ZREVRANGE', walk, start, start + page - 1)
  if #ids == 0 then break end
  local chans = redis.call('HMGET', KEYS[3], unpack(ids))
  for i, id in ipairs(ids) do
    if not hidden[chans[i] or ''] then
      if seen >= offset then
        if #out >= limit then more = 1 break end
        out[#out + 1] = id
      end
      seen = seen + 1
    end
  end
  start = start + page
end
if nterms > 1 then redis.call('DEL', KEYS[4]) end
local docs = {}
if #out > 0 then docs = redis.call('HMGET', KEYS[2], unpack(out)) end
return {more, docs}
"""


@dataclass(frozen=True)
class SearchPage:
    entries: list[LibraryEntry]
    more: bool  # whether another page follows


class LibraryIndex:
    """Add, delete and search the workspace's library entries; 1 script call each."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._add = redis.register_script(_ADD)
        self._delete = redis.register_script(_DELETE)
        self._search = redis.register_script(_SEARCH)

    def _base(self, team: str) -> list[str]:
        k = self._keys
        return [k.library_feed(team), k.library_docs(team), k.library_channel_of(team)]

    async def add(self, entry: LibraryEntry) -> None:
        team = entry.team_id or NO_TEAM
        k = self._keys
        terms = terms_of(entry)
        await self._add(
            keys=[
                *self._base(team),
                k.library_terms_of(team),
                k.library_channels(team),
                *(k.library_term(team, t) for t in terms),
            ],
            args=[
                entry.id,
                entry.model_dump_json(),
                int(entry.created_at.timestamp() * 1000),
                entry.channel_id or "",
                *terms,
            ],
        )

    async def delete(self, entry_id: str, *, team_id: str | None) -> bool:
        """Remove an entry from the index; True if it was there. 2 round trips."""
        team = team_id or NO_TEAM
        k = self._keys
        raw = await self._redis.hget(k.library_terms_of(team), entry_id)
        terms = text(raw).split() if raw is not None else []
        existed = await self._delete(
            keys=[
                *self._base(team),
                k.library_terms_of(team),
                *(k.library_term(team, t) for t in terms),
            ],
            args=[entry_id],
        )
        return bool(int(existed))

    async def channels(self, team_id: str | None) -> set[str]:
        """Every channel the workspace's entries were made in."""
        members = await self._redis.smembers(self._keys.library_channels(team_id or NO_TEAM))
        return {text(m) for m in members}

    async def get(self, entry_id: str, *, team_id: str | None) -> LibraryEntry | None:
        raw = await self._redis.hget(self._keys.library_docs(team_id or NO_TEAM), entry_id)
        return None if raw is None else parse_entry(text(raw))

    async def search(
        self,
        team_id: str | None,
        terms: Sequence[str] = (),
        *,
        hidden: Iterable[str] = (),
        offset: int = 0,
        limit: int = 10,
    ) -> SearchPage:
        """Entries with every term (none: all), newest first, skipping those made in
        `hidden` channels; `limit` of them after `offset`. 1 round trip."""
        team = team_id or NO_TEAM
        k = self._keys
        limit = max(1, min(limit, SEARCH_PAGE_MAX))
        more, docs = await self._search(
            keys=[
                *self._base(team),
                k.library_scratch(team),
                *(k.library_term(team, t) for t in list(terms)[:MAX_QUERY_TERMS]),
            ],
            args=[max(0, offset), limit, *hidden],
        )
        entries = [parse_entry(text(d)) for d in docs if d is not None]
        return SearchPage(entries=entries, more=bool(int(more)))

    async def backfill(
        self, library: PromptLibrary, *, team_for_unknown: str | None = None, page: int = 500
    ) -> int:
        """Index every entry of every workspace's library (those locked before this index
        existed). An entry that names no workspace is filed under `team_for_unknown` (a
        deployment with one workspace), else under no workspace. Returns how many were
        indexed. SCAN walks every primary of a Redis Cluster."""
        done = 0
        pattern = self._keys.library_all("*")
        head, _, tail = pattern.partition("*")
        async for raw_key in self._redis.scan_iter(match=pattern, count=1000):
            key = text(raw_key)
            team = key[len(head) : len(key) - len(tail)]
            start = 0
            while ids := await self._redis.zrange(key, start, start + page - 1):
                for pid in ids:
                    entry = await library.get(text(pid), team=team)
                    if entry is None:
                        continue
                    if entry.team_id is None and team_for_unknown:
                        entry = entry.model_copy(update={"team_id": team_for_unknown})
                    await self.add(entry)
                    done += 1
                start += page
        return done
