"""Rewards: each click is joined to its session's latest impression, in Redis, idempotently.

A click is a reward for the latest impression the session was served at or before the click
(within `attribution_window_s`) when that impression showed the clicked item; the shadow lists of
the same request are judged by the same click. An impression counts as clicked once, at its first
rewarding click, with that click's rank.

Why in Redis, in one Lua script per event: clicks and impressions come through two topics (and the
impression log flushes in the background), so either can arrive first. The script appends the
event to its session's short lists and joins from both lists, so the order of arrival does not
matter, and it marks what it counted (impression, click, decision, reward) in the session's hash
with HSETNX, so a redelivered event (a retried batch, a restarted worker) changes nothing. Being
atomic, a crash can only happen before or after an event's whole effect.

A click is decided once its impression is known for sure: when the session has a later served
impression that the log has been read past (`ImpressionWatermark`, so none can still arrive
between), or `SETTLE_S` after the click (the worker's
`sweep` timer decides those: a session's last click, or clicks without any impression). Deciding
on the first impression seen would reward an older answer whenever the click overtook its own
impression on the way to the worker (found by the simulation's crash test: 187 rewards counted
for 163 rewarded clicks).
Decided is not final: an impression read after a click was decided, and still the click's latest
before it (the watermark below was wrong: a worker killed mid-batch, records Faust dropped), takes
the decision over. What the click gave an older answer is taken back (its counters, its marks and
its reward log entry: XDEL) and the late impression is judged; a reward taken back goes to another
click that joined the same answer, if one showed its item. So the counts converge (for the session's
last `MAX_CLICKS` clicks, within the keys' lifetime) to the join of what was logged whatever order
the two topics were read in, once both are read. The watermark still decides nearly every click
right the first time (the reward log's readers rarely see an entry go), and Prometheus counts the
take-backs (`streamrec_worker_rewards_retracted_total`). Found by the simulation's kill test, which
after six fixes to the watermark still failed two of three full fault runs (185 rewards counted of
186, then 189 of 188).
The session's keys expire after the window; a session that has clicks but no impression (a
replay without /recommend) keeps them only `PENDING_CLICK_TTL_S`, so Redis holds no more than the
impression log's delay needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from streaming import metrics
from streamrec.arm_stats import ARM_KEY_PREFIX, REWARD_LOG, REWARD_LOG_MAX
from streamrec.impressions import Impression

T = TypeVar("T")

MAX_IMPRESSIONS = 16  # per session: the latest ones (a click joins the latest before it)
MAX_CLICKS = 32
PENDING_CLICK_TTL_S = 120  # a click may reach the worker before the impression it rewards
SETTLE_S = 5.0  # a click's impression is taken as known this long after the click (the log's delay is ms)
# While records of the impression log are being fetched again after later ones were processed
# (streaming.progress), a later impression decides a click only once the log is read contiguously
# this far past it: all impressions answered before it were then read too (the log's records trail
# their answers by ms, FLUSH_S). Read in order, it decides at once: a margin there holds every click
# of a fast session while MAX_IMPRESSIONS newer answers push its impression out (the simulation's
# bots: 16,229 rewards counted of 16,344 with a margin whenever the log was behind).
LATER_MARGIN_S = 1.0
ANY_TIME = 1e18  # read in order: any later impression decides (the API's clock may run ahead of the worker's)
PENDING = "streamrec:att:pending"  # sessions with undecided clicks, scored by the oldest one's time
SWEEP_BATCH = 1000

ATTRIBUTE_LUA = """
local imp_key, clk_key, done_key, pending_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local kind, raw = ARGV[1], ARGV[2]
local window, ttl, pending_ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local prefix, max_imps, max_clicks = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local reward_log, reward_log_max = ARGV[9], ARGV[10]
local now, settle, session = tonumber(ARGV[11]), tonumber(ARGV[12]), ARGV[13]
local later_by = tonumber(ARGV[14])
local new, rec = 0, nil
local rewards, retracted = {}, {}
if kind == 'imp' then
  rec = cjson.decode(raw)
  if redis.call('HSETNX', done_key, 'c:' .. rec.r .. ':' .. rec.a, 1) == 1 then
    new = 1
    redis.call('HINCRBY', prefix .. rec.e .. ':' .. rec.a, rec.s == 1 and 'shadow_impressions' or 'impressions', 1)
    redis.call('LPUSH', imp_key, raw)
    redis.call('LTRIM', imp_key, 0, max_imps - 1)
  end
elseif kind == 'clk' then
  local c = cjson.decode(raw)
  if redis.call('HSETNX', done_key, 'k:' .. c.k, 1) == 1 then
    new = 1
    redis.call('LPUSH', clk_key, raw)
    redis.call('LTRIM', clk_key, 0, max_clicks - 1)
  end
end
local keep = ttl
if redis.call('EXISTS', imp_key) == 0 then keep = pending_ttl end
for n = 1, 3 do redis.call('EXPIRE', KEYS[n], keep) end

local imps = {}
for _, s in ipairs(redis.call('LRANGE', imp_key, 0, -1)) do table.insert(imps, cjson.decode(s)) end
local clicks = {}
for _, s in ipairs(redis.call('LRANGE', clk_key, 0, -1)) do table.insert(clicks, 1, cjson.decode(s)) end

-- the arm's counter fields of a served (s 0) or shadow (s 1) list
local function fields(shadow)
  if shadow == 1 then return 'shadow_clicked', 'shadow_rr_sum' end
  return 'clicked', 'rr_sum'
end

-- judge click c on the lists of request d.r (the served one and its shadows) it joined: the first
-- rewarding click of a list counts it (r: its rank, o: the click owning it). Each grant is kept in
-- the decision (arm, experiment, track, rank, reward log id) so that a revision can take it back;
-- true if anything was granted. `only`: judge that one list (a shadow read late) instead of all.
local function judge(c, d, only)
  local granted = false
  for _, imp in ipairs(only and {only} or imps) do
    if imp.r == d.r then
      for rank, item in ipairs(imp.i) do
        if item == c.i then
          local mark = imp.r .. ':' .. imp.a
          if redis.call('HSETNX', done_key, 'r:' .. mark, rank) == 1 then
            redis.call('HSET', done_key, 'o:' .. mark, c.k)
            local h, clicked, rr = prefix .. imp.e .. ':' .. imp.a, fields(imp.s)
            redis.call('HINCRBY', h, clicked, 1)
            redis.call('HINCRBYFLOAT', h, rr, 1 / rank)
            local x = redis.call('XADD', reward_log, 'MAXLEN', '~', reward_log_max, '*', 'request_id', imp.r,
                                 'experiment', imp.e, 'version', imp.a, 'rank', rank, 'shadow', imp.s,
                                 'impression_ts', tostring(imp.t), 'click_ts', tostring(c.t))
            table.insert(d.g, {imp.a, imp.e, imp.s, rank, x})
            table.insert(rewards, {imp.a, rank, imp.s})
            granted = true
          end
          break
        end
      end
    end
  end
  return granted
end

local function save(c, d)
  redis.call('HSET', done_key, 'j:' .. c.k, cjson.encode(d))
end

-- the click's decision {t, r: the served impression it joined ('' none), g: grants}; nil while
-- undecided (or decided before decisions were kept)
local function decision(c)
  local j = redis.call('HGET', done_key, 'j:' .. c.k)
  if not j or j == '1' then return nil end
  local d = cjson.decode(j)
  if type(d.g) ~= 'table' then d.g = {} end
  return d
end

-- take back what a decision granted and still owns: counters, marks, reward log entries
local function retract(c, d)
  for _, g in ipairs(d.g) do
    local arm, experiment, shadow, rank, x = g[1], g[2], g[3], g[4], g[5]
    local mark = d.r .. ':' .. arm
    if redis.call('HGET', done_key, 'o:' .. mark) == c.k then
      local h, clicked, rr = prefix .. experiment .. ':' .. arm, fields(shadow)
      redis.call('HDEL', done_key, 'r:' .. mark, 'o:' .. mark)
      redis.call('HINCRBY', h, clicked, -1)
      redis.call('HINCRBYFLOAT', h, rr, -1 / rank)
      redis.call('XDEL', reward_log, x)
      table.insert(retracted, {arm, rank, shadow})
    end
  end
  d.g = {}
end

-- a served impression read after a click was decided, between the answer the click joined (or
-- none) and the click, takes the decision over; a reward taken back may go to another click that
-- joined the same answer. A shadow list read late is judged by the click that joined its request.
local function revise(c, d)
  if rec.s == 1 then
    if rec.r == d.r and judge(c, d, rec) then save(c, d) end
    return
  end
  if rec.t > c.t or c.t - rec.t > window or rec.r == d.r or rec.t <= d.t then return end
  local old = d.r
  retract(c, d)
  d.t, d.r = rec.t, rec.r
  judge(c, d)
  save(c, d)
  if old == '' then return end
  for _, other in ipairs(clicks) do
    local od = other.k ~= c.k and decision(other)
    if od and od.r == old and judge(other, od) then save(other, od) end
  end
end

if rec and new == 1 then
  for _, c in ipairs(clicks) do
    -- a served impression after the click cannot revise it: in order, no lookup at all
    if rec.s == 1 or rec.t <= c.t then
      local d = decision(c)
      if d then revise(c, d) end
    end
  end
end

local waiting = nil
for _, c in ipairs(clicks) do
  if redis.call('HEXISTS', done_key, 'j:' .. c.k) == 0 then
    local served, later = nil, false
    for _, imp in ipairs(imps) do
      if imp.s == 0 then
        if imp.t <= c.t and c.t - imp.t <= window and (served == nil or imp.t > served.t) then served = imp end
        if imp.t > c.t and imp.t <= later_by then later = true end
      end
    end
    if later or c.t <= now - settle then
      local d = {t = -1, r = '', g = {}}
      if served then
        d.t, d.r = served.t, served.r
        judge(c, d)
      end
      save(c, d)
    elseif waiting == nil or c.t < waiting then
      waiting = c.t
    end
  end
end
if waiting then
  redis.call('ZADD', pending_key, waiting, session)
else
  redis.call('ZREM', pending_key, session)
end
return {new, rewards, retracted}
"""


class ImpressionWatermark:
    """The time up to which the worker has read the impression log: the time the partitions' ends
    were last measured while every assigned impressions partition is caught up, else the latest
    impression time read contiguously (`streaming.progress`: every record before it processed) in
    the partitions still behind (0 for one not read yet). A click is decided `SETTLE_S` after it by
    this clock, not the wall's: a restarted worker working through a backlog would otherwise
    decide every old click at once, before reading the impressions it rewards (the simulation's
    kill test: 184 rewards counted of 195). Contiguously, because Faust can drop records it handed over and have them fetched again
    after later ones (the same test: 182 of 189 before this).

    A partition whose position is unknown (nothing processed from it since it was assigned) counts
    as behind for `grace_s` after it was assigned only: one that gets no impressions at all must not
    hold clicks back for ever. The grace starts at assignment, not at start-up: Faust's start-up
    and table recovery can take longer than the grace on a busy machine.

    With no impressions partition assigned (starting, or in a rebalance) nothing is known: the
    clock holds at its last value while assigned (0 before the first assignment). Taking "nothing
    assigned" as "nothing behind" let a restarted worker, waiting for its assignment, decide the
    dead worker's pending clicks by the wall clock before their impressions were read (the
    simulation's kill test: 192 rewards counted for 191 rewarded clicks).

    "Caught up" is as of the ends measured at `update(..., at=)` (the worker asks the broker), so
    the clock goes no further than that moment: an end cached from the consumer's last fetch can be
    seconds old when fetching stalls (a restarted worker delivering a backlog), and the wall clock
    then decided clicks whose impressions were in the broker but not fetched (the kill test: 189
    rewards counted of 196). If the measurements stop (the broker is down), the clock stops too.

    "In order" (a session's later impression proves the earlier ones were read) holds only for what
    this process read: another one (the worker before a restart, the owner before a rebalance) may
    have written later impressions to Redis while Faust had dropped an earlier one. So a partition
    vouches only once this process has read it up to the end it had when assigned (`inherited`:
    records below that end not yet read; unknown ones vouch after `grace_s`). Without this a
    restarted worker decided a click by a later impression its predecessor wrote while the click's
    own impression was still unread (the kill test: 184 rewards counted of 185)."""

    def __init__(self, grace_s: float = 30.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 rewinding: Callable[[], dict[int, float]] = dict) -> None:
        self.grace_s = grace_s
        self.clock = clock
        self.monotonic = monotonic
        self.rewinding = rewinding  # live, between updates: partitions being fetched again -> read time
        self.read: dict[int, float] = {}  # partition -> latest impression time read contiguously
        self.lags: dict[int, int | None] = {}  # partition -> unread records (None: unknown); empty: none assigned
        self.assigned_at: dict[int, float] = {}  # partition -> monotonic time it was first seen assigned
        self.held = 0.0  # the mark while nothing is assigned: the last one computed while assigned
        self.checked_at = 0.0  # wall time the partitions' ends were measured at
        self.vouching: set[int] = set()  # partitions read up to the end they had when assigned

    def update(self, lags: dict[int, int | None], read: dict[int, float] | None = None,
               at: float | None = None, inherited: dict[int, int | None] | None = None) -> None:
        """Unread records of each assigned impressions partition (`None` where not known yet), as
        of the partitions' ends measured at wall time `at` (default: now), the latest record time
        read contiguously in each, and the records below each partition's end at assignment not yet
        read (`inherited`; `None` or absent where not known)."""
        if self.lags and not lags:
            self.held = self()  # a rebalance took everything: hold what was known
        self.checked_at = self.clock() if at is None else at
        at = self.monotonic()
        self.assigned_at = {p: self.assigned_at.get(p, at) for p in lags}
        self.lags = dict(lags)
        self.read = dict(read or {})
        inherited = inherited or {}
        self.vouching = {p for p in lags if p in self.vouching
                         or (inherited.get(p) is not None and inherited[p] <= 0)
                         or (inherited.get(p) is None and at - self.assigned_at[p] >= self.grace_s)}

    def __call__(self) -> float:
        if not self.lags:
            return self.held
        now = min(self.clock(), self.checked_at)
        mono = self.monotonic()
        behind = [self.read.get(p, 0.0) for p, lag in self.lags.items()
                  if (lag or 0) > 0 or (lag is None and mono - self.assigned_at.get(p, mono) < self.grace_s)]
        return min([now, *behind, *self.rewinding().values()])

    @property
    def in_order(self) -> bool:
        """Whether every impression processed so far was read in its partition's order (no records
        being fetched again after later ones): then a session's later impression proves that the
        earlier ones were read. Not while no impressions partition is assigned (starting, or in a
        rebalance): nothing is known then, and a restarted worker's clicks agent can run before its
        impressions assignment is first measured, while its predecessor's later impressions sit in
        Redis (the kill test: 185 rewards counted of 186, a click decided 0.026 s after its unread
        impression)."""
        return bool(self.lags) and all(p in self.vouching for p in self.lags) and not self.rewinding()


@dataclass(frozen=True)
class Click:
    """A valid click as the join needs it; `partition`/`offset` in the clicks topic are its identity."""

    session_id: str
    item_id: int
    ts: float  # seconds: the Kafka record's time (the API's clock for POST /events, as impressions)
    partition: int
    offset: int


@dataclass(frozen=True)
class Reward:
    version: str
    rank: int
    shadow: bool


@dataclass
class Outcome:
    new_impressions: int = 0
    new_clicks: int = 0
    rewards: list[Reward] | None = None
    retracted: list[Reward] | None = None  # rewards taken back: an impression read late revised a click


def session_keys(session_id: str) -> list[str]:
    """The session's impressions, clicks and done-marks (one hash tag, so one Redis Cluster slot),
    and the set of sessions with undecided clicks."""
    base = f"streamrec:att:{{{session_id}}}:"
    return [base + "imp", base + "clk", base + "done", PENDING]


class RewardAttribution:
    def __init__(self, client, window_s: float, retry: Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]) -> None:  # noqa: ANN001
        self.client = client
        self.window_s = float(window_s)
        self.ttl_s = int(max(window_s * 2, 3600))
        self.script = client.register_script(ATTRIBUTE_LUA)
        self.retry = retry
        self.settle_s = SETTLE_S
        # "now" for deciding clicks: the worker sets an ImpressionWatermark; tests set a fixed time
        self.clock: Callable[[], float] = time.time

    def _now(self) -> tuple[float, float]:
        """(the clock, the time a later impression must be at or before to decide a click)."""
        now = self.clock()
        return now, ANY_TIME if getattr(self.clock, "in_order", True) else now - LATER_MARGIN_S

    def _args(self, kind: str, raw: str, session_id: str, now: tuple[float, float]) -> list[object]:
        return [kind, raw, self.window_s, self.ttl_s, PENDING_CLICK_TTL_S, ARM_KEY_PREFIX, MAX_IMPRESSIONS, MAX_CLICKS,
                REWARD_LOG, REWARD_LOG_MAX, now[0], self.settle_s, session_id, now[1]]

    async def record(self, impressions: list[Impression] = (), clicks: list[Click] = ()) -> Outcome:  # type: ignore[assignment]
        """Apply a batch in one round trip (retried until Redis takes it: the caller acks after)."""
        now = self._now()
        calls = [(session_keys(i.session_id), self._args("imp", _impression_json(i), i.session_id, now))
                 for i in impressions]
        calls += [(session_keys(c.session_id), self._args("clk", _click_json(c), c.session_id, now)) for c in clicks]
        return await self._run(calls, impressions)

    async def sweep(self) -> Outcome:
        """Decide the clicks that waited `settle_s` for their impression (a timer calls this)."""
        now = self._now()
        sessions = await self.retry(lambda: self.client.zrangebyscore(PENDING, "-inf", now[0] - self.settle_s,
                                                                      start=0, num=SWEEP_BATCH))
        ids = [s.decode() if isinstance(s, bytes) else s for s in sessions]
        return await self._run([(session_keys(i), self._args("sweep", "", i, now)) for i in ids], [])

    async def _run(self, calls: list, impressions: list[Impression]) -> Outcome:  # type: ignore[type-arg]
        """One pipelined round trip of script calls, the impressions' first."""
        if not calls:
            return Outcome(rewards=[], retracted=[])

        async def run() -> list:
            async with self.client.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    await self.script(keys=keys, args=args, client=pipe)
                return await pipe.execute()

        replies = await self.retry(run)
        outcome = Outcome(rewards=[], retracted=[])
        for n, (new, rewards, retracted) in enumerate(replies):
            if n < len(impressions):
                outcome.new_impressions += int(new)
            else:
                outcome.new_clicks += int(new)
            outcome.rewards += [_reward(*reply) for reply in rewards]
            outcome.retracted += [_reward(*reply) for reply in retracted]
        for impression, (new, *_) in zip(impressions, replies):
            metrics.IMPRESSIONS.labels(impression.model_version, _track(impression.shadow),
                                       "counted" if new else "duplicate").inc()
        for reward in outcome.rewards:
            metrics.REWARDS.labels(reward.version, _track(reward.shadow)).inc()
            metrics.REWARD_RANK.labels(reward.version, _track(reward.shadow)).observe(reward.rank)
        for reward in outcome.retracted:
            metrics.REWARDS_RETRACTED.labels(reward.version, _track(reward.shadow)).inc()
        return outcome


def _reward(version: bytes | str, rank: int, shadow: int) -> Reward:
    return Reward(version.decode() if isinstance(version, bytes) else version, int(rank), bool(shadow))


def _track(shadow: bool) -> str:
    return "shadow" if shadow else "served"


def _impression_json(impression: Impression) -> str:
    return json.dumps({"r": impression.request_id, "t": impression.ts, "a": impression.model_version,
                       "e": impression.experiment, "s": int(impression.shadow), "i": list(impression.items)},
                      separators=(",", ":"))


def _click_json(click: Click) -> str:
    return json.dumps({"t": click.ts, "i": click.item_id, "k": f"{click.partition}:{click.offset}"},
                      separators=(",", ":"))
