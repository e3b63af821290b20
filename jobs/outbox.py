"""Drain the outbox: lease destinations, send their deliveries, record every attempt.

Many drainers (tasks in one process, or several `parley jobs` processes) run side by side:
parley.lease_outbox_destinations hands each destination to one worker at a time (a lease that
expires if the worker dies), so a destination's deliveries keep their order. Sends happen
outside any transaction; results are recorded as they come (_Recording: after each post of an
ordered destination, every RECORD_S on an unordered one), so a drainer that dies mid-batch leaves
only what was in flight or just answered to be sent again. NOTIFY on
`parley_events` / `parley_outbox` only wakes the loop early: it polls every POLL_S anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import time

import asyncpg
from pyapp import metrics, tracing
from pyapp.channels.envelope import Keyring, SecretUnavailable, open_secrets
from pyapp.db import Actor, tenant_tx
from pyapp.outbox.registry import default_senders
from pyapp.outbox.senders import RAW_BODY, Delivery, Destination, Progress, Result, Sender

log = logging.getLogger("parley.jobs.outbox")

CHANNELS = ("parley_events", "parley_outbox")
POLL_S = 1.0
LEASE_S = int(os.environ.get("PARLEY_OUTBOX_LEASE_S", "30"))  # a dead drainer's destinations wait this long
BATCH = 100
MAX_DESTINATIONS = 16  # destinations worked on at once per drainer
SEND_CONCURRENCY = 32  # sends in flight per unordered destination
RECORD_S = 0.1  # an unordered destination's answers are recorded this long after the first unrecorded one

SECRET_PURPOSE = {"webhook": "signing", "slack": "token", "telegram": "token"}
THREADED = {"telegram"}  # kinds that keep a thread per conversation (parley.channel_threads)

_DESTINATION = """SELECT d.id, d.kind, d.target, d.config, d.ordered
                    FROM parley.outbox_destinations d WHERE d.id = $1"""
_TAKE = "SELECT * FROM parley.take_outbox_batch($1, $2, $3, $4)"
# Kinds that send the stored body as is (webhooks): its JSON text, never decoded here.
_TAKE_RAW = """SELECT t.id, t.created_at, t.delivery_key, t.kind, t.payload::text AS body, t.attempts, t.event_id,
                      t.conversation_id FROM parley.take_outbox_batch($1, $2, $3, $4) t"""
# Channel kinds take posts: a conversation's messages coalesced, handoffs first (sql/84_telegram.sql).
_TAKE_POSTS = "SELECT * FROM parley.take_channel_batch($1, $2, $3, $4)"
_RECORD = "SELECT parley.record_outbox_results($1, $2, $3, $4)"
_RENEW = "SELECT d.id FROM parley.renew_destination_lease($1, $2, $3) d"


class OutboxDrainer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        worker: str,
        *,
        senders: dict[str, Sender] | None = None,
        listen_dsn: str | None = None,
        lease_s: int = LEASE_S,
        batch: int = BATCH,
        max_destinations: int = MAX_DESTINATIONS,
        poll_s: float = POLL_S,
        keyring: Keyring | None = None,
    ):
        self.pool = pool
        self.keyring = keyring
        self.worker = worker
        self.senders = senders if senders is not None else default_senders()
        self.listen_dsn = listen_dsn
        self.lease_s = lease_s
        self.batch = batch
        self.max_destinations = max_destinations
        self.poll_s = poll_s
        self.wake = asyncio.Event()
        self.active: dict[tuple, asyncio.Task] = {}  # (tenant_id, destination_id) -> its task
        self.sent = 0

    # -- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until stop is set."""
        listener = asyncio.create_task(self._listen(stop)) if self.listen_dsn else None
        failures = 0
        try:
            while not stop.is_set():
                try:
                    leased = await self.lease_more()
                    failures = 0
                except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                    # The database restarting or away: keep trying, what is pending stays in its table.
                    failures += 1
                    log.warning("outbox lease failed (%s); retrying", exc)
                    await _wait(stop, min(0.2 * 2**failures, 5))
                    continue
                if not leased:
                    self.wake.clear()
                    waiters = [asyncio.create_task(self.wake.wait()), asyncio.create_task(stop.wait())]
                    await asyncio.wait(
                        waiters + list(self.active.values()), timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED
                    )
                    for w in waiters:
                        w.cancel()
        finally:
            if listener:
                listener.cancel()
            for task in list(self.active.values()):
                task.cancel()
            await asyncio.gather(*self.active.values(), return_exceptions=True)

    async def drain(self, timeout: float = 60.0) -> int:
        """Send everything that is ready now (tests, `parley jobs --once`); returns deliveries sent."""
        before = self.sent
        async with asyncio.timeout(timeout):
            while True:
                leased = await self.lease_more()
                if not leased and not self.active:
                    return self.sent - before
                if self.active:
                    await asyncio.wait(list(self.active.values()), return_when=asyncio.FIRST_COMPLETED)

    async def lease_more(self) -> int:
        room = self.max_destinations - len(self.active)
        if room <= 0:
            return 0
        busy = [destination_id for _tenant, destination_id in self.active]
        rows = await self.pool.fetch(
            "SELECT * FROM parley.lease_outbox_destinations($1, $2, $3, $4)", self.worker, room, self.lease_s, busy
        )
        for row in rows:
            key = (row["tenant_id"], row["destination_id"])
            task = asyncio.create_task(self._work(row["tenant_id"], row["destination_id"], row["kind"]))
            self.active[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        return len(rows)

    def _forget(self, key: tuple, _task: asyncio.Task) -> None:
        self.active.pop(key, None)

    async def _listen(self, stop: asyncio.Event) -> None:
        """One LISTEN connection outside the pool; reconnects; a missed notice only delays."""
        backoff = 0.5
        while not stop.is_set():
            conn = None
            try:
                conn = await asyncpg.connect(self.listen_dsn)
                for channel in CHANNELS:
                    await conn.add_listener(channel, lambda *_a: self.wake.set())
                backoff = 0.5
                while not stop.is_set():
                    await asyncio.sleep(10)
                    await conn.fetchval("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poll keeps draining meanwhile
                log.warning("outbox listener: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
            finally:
                if conn is not None:
                    await conn.close(timeout=2)

    # -- one destination -----------------------------------------------------------------

    def _tx(self, tenant_id):
        return tenant_tx(self.pool, Actor(tenant_id=tenant_id, kind="system", actor_id=self.worker))

    async def _work(self, tenant_id, destination_id, kind: str) -> None:
        take = _TAKE_POSTS if kind in THREADED else _TAKE_RAW if kind in RAW_BODY else _TAKE
        raw = kind in RAW_BODY
        try:
            deadline = time.monotonic() + self.lease_s * 0.8
            while time.monotonic() < deadline:
                async with self._tx(tenant_id) as conn:
                    dest_row = await conn.fetchrow(_DESTINATION, destination_id)
                    rows = await conn.fetch(take, destination_id, self.worker, self.batch, self.lease_s)
                    destination = await self._destination(conn, tenant_id, dest_row) if dest_row and rows else None
                    threads = await self._threads(conn, destination, rows) if destination else {}
                    parents = await _traceparents(conn, destination_id, rows) if destination else {}
                if not rows or destination is None:
                    return
                deliveries = [
                    Delivery(
                        id=r["id"],
                        created_at=r["created_at"],
                        delivery_key=r["delivery_key"],
                        kind=r["kind"],
                        payload={} if raw else r["payload"],
                        body=r["body"] if raw else None,
                        attempts=r["attempts"],
                        conversation_id=r["conversation_id"],
                        thread=threads.get(r["conversation_id"], (None, None))[0],
                        thread_title=threads.get(r["conversation_id"], (None, None))[1],
                        parts_sent=r.get("parts_sent") or 0,
                        traceparent=parents.get(r["id"]),
                    )
                    for r in rows
                ]
                recording = _Recording(self, tenant_id, destination_id)
                lost = asyncio.Event()  # the lease is gone: send nothing more of this batch
                keeper = asyncio.create_task(self._keep_lease(tenant_id, destination_id, lost))
                try:
                    results = await self._send(destination, deliveries, _posts(rows), recording, lost)
                    await recording.close()
                except BaseException:  # stopped, or a record failed: what was answered is recorded if it can be
                    with contextlib.suppress(Exception):
                        await recording.close()
                    raise
                finally:
                    keeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await keeper
                if len(results) < len(deliveries) or any(res.outcome != "delivered" for _d, res in results):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("outbox: destination %s of tenant %s", destination_id, tenant_id)
        finally:
            try:
                async with self._tx(tenant_id) as conn:
                    await conn.execute("SELECT parley.release_outbox_destination($1, $2)", destination_id, self.worker)
            except Exception as exc:  # this worker's next lease takes it again (lease_outbox_destinations)
                log.warning("outbox: release of %s failed: %s", destination_id, exc)

    async def _keep_lease(self, tenant_id, destination_id, lost: asyncio.Event) -> None:
        """Renew the destination's lease every third of it while a batch is sent: a batch may outlast
        its lease (a slow endpoint, 15 s a send, one post at a time), and another drainer that took the
        destination then would send what is not recorded yet again, and out of order. A lease that
        cannot be renewed (another drainer took it, or the destination was paused or held meanwhile,
        parley.renew_destination_lease) sets `lost`: the batch sends nothing more."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                async with self._tx(tenant_id) as conn:
                    kept = await conn.fetchval(_RENEW, destination_id, self.worker, self.lease_s)
            except Exception as exc:  # the database away or busy: tried again at the next third
                log.warning("outbox: lease of %s not renewed (%s: %s)", destination_id, type(exc).__name__, exc)
                continue
            if kept is None:
                log.info("outbox: lease of destination %s lost mid-batch; the rest of the batch waits", destination_id)
                lost.set()
                return

    async def _destination(self, conn, tenant_id, row) -> Destination:
        return Destination(
            id=row["id"],
            kind=row["kind"],
            target=row["target"],
            config=row["config"],
            ordered=row["ordered"],
            secrets=tuple(await self._secrets(conn, tenant_id, row)),
        )

    async def _threads(self, conn, destination: Destination, rows) -> dict:
        """The threads (and their titles) a channel destination already has for the batch's conversations."""
        if destination.kind not in THREADED:
            return {}
        ids = list({r["conversation_id"] for r in rows if r["conversation_id"] is not None})
        found = await conn.fetch("SELECT * FROM parley.channel_threads_for($1, $2)", destination.id, ids)
        return {r["conversation_id"]: (r["thread_ref"], r["title"]) for r in found}

    async def _secrets(self, conn, tenant_id, row) -> list[str]:
        """Opened secrets the adapter signs or authenticates with (none for kinds without any)."""
        purpose = SECRET_PURPOSE.get(row["kind"])
        if purpose is None or self.keyring is None:
            return []
        try:
            return await open_secrets(conn, self.keyring, tenant_id, row["id"], purpose)
        except SecretUnavailable as exc:  # never the secret itself: the reason only
            log.error("outbox: secrets of destination %s unavailable: %s", row["id"], exc)
            return []

    async def _send(
        self,
        destination: Destination,
        deliveries: list[Delivery],
        posts: list[int],
        recording: _Recording,
        lost: asyncio.Event,
    ) -> list[tuple[Delivery, Result]]:
        """Send a batch, handing each answer to ``recording`` as it comes (an ordered destination's
        post is recorded before the next goes); ``posts[i]`` is the post delivery i belongs to.
        Ordered destinations send each post (several deliveries coalesced, or one) in turn; one not
        delivered stops the rest of
        its conversation (the ordering key: one Telegram topic), the other conversations go on, unless
        the answer holds or pauses the whole destination (retry_after, pause_reason). Once ``lost`` is
        set (the lease is gone, _keep_lease) nothing more is sent: the rest stays pending."""
        sender = self.senders.get(destination.kind)
        if sender is None:
            done = [
                (d, Result("retry", error=f"no adapter for {destination.kind!r} in this process")) for d in deliveries
            ]
            recording.add(done)
            return done
        if destination.ordered:
            done = []
            made: dict = {}  # threads made or renamed in this batch serve the conversation's next deliveries
            stopped: set = set()  # ordering keys (conversations) whose post did not get through
            for group in _grouped(deliveries, posts):  # one post at a time; a failure stops its conversation only
                if lost.is_set():
                    break
                first = group[0]
                if first.conversation_id in stopped:
                    continue  # left pending: taken again, in order, after the failed one is settled
                if first.conversation_id in made:
                    thread, title = made[first.conversation_id]
                    group = [dataclasses.replace(d, thread=thread, thread_title=title) for d in group]
                    first = group[0]
                res = await _safe_send(sender, destination, first, group, recording.progress)
                if first.conversation_id is not None and (res.extra.get("thread") or res.extra.get("title")):
                    made[first.conversation_id] = (
                        str(res.extra.get("thread") or first.thread),
                        res.extra.get("title") or first.thread_title,
                    )
                done += [(d, res) for d in group]
                await recording.now([(d, res) for d in group])
                if res.outcome != "delivered":
                    stopped.add(first.conversation_id)
                    if res.retry_after is not None or res.pause_reason is not None:
                        break  # the whole destination waits (429) or is gone (403): nothing else goes now
            return done
        gate = asyncio.Semaphore(SEND_CONCURRENCY)

        async def one(d):
            async with gate:
                if lost.is_set():
                    return None
                answered = d, await _safe_send(sender, destination, d)
            recording.add([answered])
            return answered

        return [answered for answered in await asyncio.gather(*(one(d) for d in deliveries)) if answered is not None]

    async def close(self) -> None:
        for sender in self.senders.values():
            await sender.close()


class _Recording:
    """One batch's answers, recorded as they come (parley.record_outbox_results, called once or more
    per batch): a drainer that dies mid-batch must not leave the answered ones to be sent again.
    ``now`` records at once (an ordered destination's post: worth more than a small transaction);
    ``add`` within RECORD_S (an unordered destination's 32 sends at once: one call per window, not
    per answer); ``close`` (the batch's end) records the rest. A thread an answer made or renamed is
    recorded with it, before it. Answers that did not get through wait for the batch's first one that
    did, so the destination's health still sees the batch as one (a failure recorded alone would
    hold the destination until its retry though the batch then gets through); a thread one of them
    made is recorded at once all the same."""

    def __init__(self, drainer: OutboxDrainer, tenant_id, destination_id):
        self.drainer = drainer
        self.tenant_id = tenant_id
        self.destination_id = destination_id
        self.waiting: list[tuple[Delivery, Result]] = []
        self.delivered = 0  # of this batch, recorded (record_outbox_results' p_batch_delivered)
        self.lock = asyncio.Lock()  # one call at a time, in order
        self.ending = asyncio.Event()
        self.timer: asyncio.Task | None = None
        self.threads_done: set[int] = set()  # answers (their id()) whose thread is recorded
        self.progress = _Progress(drainer, tenant_id, destination_id)

    def add(self, answered: list[tuple[Delivery, Result]]) -> None:
        self.waiting += answered
        if self.timer is None:
            self.timer = asyncio.create_task(self._soon())

    async def now(self, answered: list[tuple[Delivery, Result]]) -> None:
        self.waiting += answered
        await self._flush()

    async def close(self) -> None:
        """The batch is over: record what is left (a failure to do so raises)."""
        self.ending.set()
        if self.timer is not None:  # waited for, not awaited: a cancelled close leaves it be
            await asyncio.wait([self.timer])
        await self._flush(final=True)

    async def _soon(self) -> None:
        await _wait(self.ending, RECORD_S)
        self.timer = None
        try:
            await self._flush()
        except Exception as exc:  # kept: the next call (at the latest close) records them
            log.warning("outbox: recording results of %s failed (%s); retrying", self.destination_id, exc)

    async def _flush(self, final: bool = False) -> None:
        async with self.lock:
            taken = self.waiting
            if not final and self.delivered == 0 and not any(res.outcome == "delivered" for _d, res in taken):
                # Failures only: they wait for the batch's first success (or its end); their threads do not.
                if any(id(res) not in self.threads_done and _thread(d, res) for d, res in taken):
                    await self._record(taken, results=False)
                return
            self.waiting = []
            if not taken:
                return
            try:
                await self._record(taken)
            except BaseException:
                self.waiting[:0] = taken
                raise
            ok = sum(1 for _d, res in taken if res.outcome == "delivered")
            self.delivered += ok
            self.drainer.sent += ok

    async def _record(self, taken: list[tuple[Delivery, Result]], results: bool = True) -> None:
        done = set(self.threads_done)
        async with self.drainer._tx(self.tenant_id) as conn:
            for d, res in taken:  # in the order they were made and renamed
                thread = _thread(d, res)
                if thread is not None and id(res) not in done:
                    done.add(id(res))
                    await conn.execute(
                        "SELECT parley.record_channel_thread($1, $2, $3, $4)", self.destination_id, *thread
                    )
            if results:
                answers = [res.record(d) for d, res in taken]
                await conn.fetchval(_RECORD, self.destination_id, self.drainer.worker, answers, self.delivered)
        self.threads_done = done


class _Progress:
    """A post's steps recorded as the sender reports them (pyapp.outbox.senders.Progress), before its
    answer: the thread it made or renamed (parley.record_channel_thread) and the parts of a split
    post delivered so far (parley.note_parts_sent). A drainer that dies mid-post leaves the next one
    only the call that was in flight to do again. A step that cannot be recorded (the database
    away) is a warning: the post goes on, and its answer records the step with it."""

    def __init__(self, drainer: OutboxDrainer, tenant_id, destination_id):
        self.drainer = drainer
        self.tenant_id = tenant_id
        self.destination_id = destination_id

    async def thread(self, delivery: Delivery, thread: str, title: str | None) -> None:
        if delivery.conversation_id is not None:
            await self._note(
                "SELECT parley.record_channel_thread($1, $2, $3, $4)", delivery.conversation_id, thread, title
            )

    async def parts(self, delivery: Delivery, parts_sent: int) -> None:
        await self._note("SELECT parley.note_parts_sent($1, $2, $3, $4)", delivery.id, delivery.created_at, parts_sent)

    async def _note(self, sql: str, *args) -> None:
        try:
            async with self.drainer._tx(self.tenant_id) as conn:
                await conn.execute(sql, self.destination_id, *args)
        except Exception as exc:
            log.warning(
                "outbox: progress of a post to %s not recorded (%s: %s)", self.destination_id, type(exc).__name__, exc
            )


def _thread(d: Delivery, res: Result) -> tuple | None:
    """The thread an answer made or renamed: (conversation, thread, title or None to keep it), or None."""
    thread = res.extra.get("thread") or d.thread
    if (res.extra.get("thread") or res.extra.get("title")) and d.conversation_id and thread:
        return d.conversation_id, str(thread), res.extra.get("title")
    return None


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _traceparents(conn, destination_id, rows) -> dict[int, str]:
    """Traces on: the trace context each taken delivery was enqueued under (none asked for when off)."""
    if not tracing.enabled() or not rows:
        return {}
    found = await conn.fetch(
        "SELECT * FROM parley.outbox_traceparents($1, $2)", destination_id, [r["id"] for r in rows]
    )
    return {r["id"]: r["traceparent"] for r in found}


def _posts(rows) -> list[int]:
    """The post each taken row belongs to: take_channel_batch's post column, else one post per row."""
    if not rows or "post" not in rows[0].keys():  # noqa: SIM118 (a Record); one look, not one per row
        return list(range(len(rows)))
    return [r["post"] for r in rows]


def _grouped(deliveries: list[Delivery], posts: list[int]) -> list[list[Delivery]]:
    """Consecutive deliveries of the same post, in order."""
    groups: list[list[Delivery]] = []
    for i, d in enumerate(deliveries):
        if groups and posts[i] == posts[i - 1]:
            groups[-1].append(d)
        else:
            groups.append([d])
    return groups


async def _safe_send(
    sender: Sender,
    destination: Destination,
    delivery: Delivery,
    group: list[Delivery] | None = None,
    progress: Progress | None = None,
) -> Result:
    """One delivery, or a post (one delivery or several coalesced) through the sender's send_post,
    which reports its progress as it goes; counted in /metrics (attempts by outcome, latency,
    retry_after) and traced (outbox.send)."""
    started = time.perf_counter()
    with tracing.span(
        "outbox.send",
        parent=delivery.traceparent,  # the request's trace, when it was traced
        links=[d.traceparent for d in group[1:]] if group else (),  # a coalesced post's other requests
        **{"parley.destination_kind": destination.kind, "parley.delivery_id": delivery.id},
    ):
        try:
            send_post = getattr(sender, "send_post", None)
            if send_post is not None and group is not None:
                result = await send_post(destination, group, progress)
            else:
                result = await sender.send(destination, delivery)
        except Exception as exc:  # an adapter bug is a failed attempt, recorded, not a lost delivery
            log.exception("outbox adapter %s", destination.kind)
            result = Result("retry", error=f"adapter error: {type(exc).__name__}"[:1000])
    _labelled(metrics.CHANNEL_SECONDS, destination.kind).observe(time.perf_counter() - started)
    _labelled(metrics.CHANNEL_SENDS, destination.kind, result.outcome).inc()
    if result.retry_after is not None:
        metrics.CHANNEL_RETRY_AFTER.labels(destination.kind).observe(result.retry_after)
    return result


@functools.cache
def _labelled(metric, *labels: str):
    """A metric's child for these labels, looked up once (labels() costs more than the observation)."""
    return metric.labels(*labels)


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
