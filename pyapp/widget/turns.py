"""Bot turns that outlive the server running them (the rules: sql/53_bot_turns.sql).

A visitor message that leaves its conversation with the bot is stored with its turn, a row in
parley.bot_turns written in the message's own transaction and named after the server that stored
it (the session setting app.worker its pooled connections carry: pyapp.db.create_pool). That
server runs the turn at once (`schedule`): the run's first transaction, the responder's own, begins by
asking SQL whether the turn is still its own (`parley.run_bot_turn`: a turn with no open row, or
another server's, ends there with `TurnLost`, nothing read or said) and learns how long its lease
still runs. From then the lease is renewed under the server's name every third of it while the turn
runs (a turn that must wait behind its conversation's earlier one is named before it waits), and
the responder ends the turn in the transaction of what it says (`BotTurn.reply`, `say`, `ending`;
pyapp/widget/hooks.py). A run whose lease is lost (the turn ended elsewhere, or another server took
it) is `turn.lost`: it says nothing more.

Every server holds its liveness lock (`parley.hold_server_lock`) on a connection of its own for as
long as it runs (`live_forever`); PostgreSQL drops it the moment the server's process dies. And
every server looks every few seconds (`bot_turn_pick_every`, PARLEY_BOT_TURN_PICK_EVERY, default
2 s) for turns whose server died (SIGKILL, OOM, a deploy: its lock is gone) or whose lease ran out
(their server stalled or lost the database): `parley.pick_bot_turns` leases them to it, one picker
per turn, and it runs them as their own server would have. A turn SQL gives up (too many runs, or too old) gets the
assistant_unavailable notice instead (`parley.give_up_bot_turn`). The visitor, on whichever
server their socket is, gets what the turn stored through the relay, or in the replay when they
reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import asyncpg
from aiohttp import web

from pyapp.context import POOL, SETTINGS, WORKER, server_name
from pyapp.db import Actor, database_outage, tenant_tx
from pyapp.errors import from_postgres
from pyapp.realtime.relay import get_relay
from pyapp.widget.hooks import BotTurn, TurnLost, visitor_hooks

log = logging.getLogger("parley.widget.turns")

PICK_EVERY_S = 2.0  # between a server's looks for turns whose server died
PICK_LIMIT = 20  # turns taken per look
RENEW_RETRY_S = 1.0  # after a renewal the database did not answer
BEHIND_POLL_S = 0.5  # how often a turn waiting behind its conversation's earlier one looks again
BEHIND_MAX_S = 60.0  # then it runs regardless (an earlier turn is given up after bot_turn_attempts runs)
LIFE_CHECK_S = 10.0  # between checks that the liveness connection still answers
LIFE_BACKOFF_S = (0.1, 2.0)  # first and longest wait before the liveness connection is opened again
LIFE_START_S = 10.0  # at most this long, at start, for the liveness lock before serving regardless
# The liveness connection: named for pg_stat_activity; TCP keepalives so that PostgreSQL ends the
# session of a server whose host vanished (power, network) in ~11 s rather than the system's hours.
LIFE_SESSION = {
    "application_name": "parley-server-life",
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}

# The run's first statement: its lease (NULL: not its turn) and whether an earlier turn of the
# conversation is still open (then it waits for it).
_ADMIT = "SELECT parley.run_bot_turn($1, $2) AS lease, parley.earlier_bot_turn_open($1) AS behind"

# What a picked-up turn needs to run: its question, conversation and chatbot.
_PICKED = """
SELECT c.chatbot_id, b.config, m.body
  FROM parley.conversations c
  JOIN parley.chatbots b ON b.tenant_id = c.tenant_id AND b.id = c.chatbot_id
  JOIN parley.messages m ON m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.id = $2
 WHERE c.tenant_id = parley.current_tenant_id() AND c.id = $1"""


class TurnBehind(TurnLost):
    """An earlier question of the conversation still has its turn open (another server runs it, or it
    waits for a pick-up: its server died): this run waits for it before it says anything."""


class LockBusy(Exception):
    """The liveness lock's key stayed held exclusively (parley.hold_server_lock's wait ran out)."""


class TurnRunner:
    """One app's bot turns: the runs under way (a conversation's one after another) and the pick-up."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        # The app's name (its pooled connections name the turns they store after it); unique per app.
        self.worker = app[WORKER] if WORKER in app else server_name()
        self.alive = asyncio.Event()  # this server holds its liveness lock
        self.locks: dict[uuid.UUID, asyncio.Lock] = {}  # a conversation's turns, one after another
        self.runs: dict[uuid.UUID, int] = {}  # runs begun and not ended, per conversation
        self.picked = 0  # turns this server picked up (tests, logs)

    def schedule(self, turn: BotTurn) -> asyncio.Task:
        """Run the bot responder on `turn` in the background, holding its lease."""
        return get_relay(self.app).spawn(self._run(turn), name=f"bot-{turn.conversation_id}")

    async def _run(self, turn: BotTurn) -> None:
        responder = visitor_hooks(self.app).bot_responder
        conversation = turn.conversation_id
        behind = conversation in self.runs  # an earlier turn of the conversation runs here: this one waits
        self.runs[conversation] = self.runs.get(conversation, 0) + 1
        lock = self.locks.setdefault(conversation, asyncio.Lock())
        keeper: asyncio.Task | None = None

        def keep(lease: float) -> None:  # renew the lease from now until the run ends
            nonlocal keeper
            if keeper is None:
                keeper = asyncio.create_task(self._keep_lease(turn, lease), name=f"bot-lease-{turn.question_id}")

        waited = False  # behind the conversation's earlier turn, once

        async def admit(conn: asyncpg.Connection) -> None:
            # SQL says whether there is a turn to run, first in the run's first transaction: none (the
            # question needs no answer, or it was answered elsewhere), or another server's, and this
            # run ends here, saying nothing; or one that must wait for the conversation's earlier turn.
            row = await conn.fetchrow(_ADMIT, turn.question_id, self.worker)
            if row["lease"] is None:
                turn.lost = True
                raise TurnLost(turn.question_id)
            keep(float(row["lease"]))
            if row["behind"] and not waited:
                raise TurnBehind(turn.question_id)

        try:
            if turn.question_id is not None:
                if behind:  # named now, and renewed while it waits
                    lease = await self._lease(turn)
                    if lease is None:
                        return
                    keep(lease)
                turn.admit = admit
            while True:
                try:
                    async with lock:
                        if turn.lost:
                            return
                        await responder(turn)
                        if not turn.ended and not turn.lost:  # it said nothing: the turn ends silently
                            await turn.end()
                    break
                except TurnBehind:  # outside the lock, so this server may run the earlier turn meanwhile
                    await self._wait_behind(turn)
                    waited = True
        except TurnLost:  # not this run's turn (SQL said so before anything was read or said)
            return
        except Exception as exc:  # the turn stays open: picked up again once its lease runs out
            mapped = from_postgres(exc) if isinstance(exc, asyncpg.PostgresError) else None
            if database_outage(exc):
                log.warning("bot turn left for pick-up: database unavailable (%s)", type(exc).__name__)
            elif mapped is not None:
                log.info("bot reply refused: %s", mapped.code)
            else:
                log.exception("bot responder failed")
        finally:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            self.runs[conversation] -= 1
            if not self.runs[conversation]:
                del self.runs[conversation], self.locks[conversation]

    async def _wait_behind(self, turn: BotTurn) -> None:
        """Wait until the conversation's earlier turns have ended (parley.earlier_bot_turn_open): they
        run on another server, or wait for a pick-up (this server's own, too). The lease is kept
        meanwhile; at most BEHIND_MAX_S, then the turn runs regardless."""
        log.info("bot turn %s waits for its conversation's earlier turn", turn.question_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BEHIND_MAX_S
        while loop.time() < deadline and not turn.lost:
            await asyncio.sleep(BEHIND_POLL_S)
            async with tenant_tx(self.app[POOL], turn.service_actor) as conn:
                if not await conn.fetchval("SELECT parley.earlier_bot_turn_open($1)", turn.question_id):
                    return

    async def _lease(self, turn: BotTurn) -> float | None:
        """Take or renew the turn's lease under this server's name: its length in seconds, or None
        when the turn is not this server's to run (parley.lease_bot_turn)."""
        async with tenant_tx(self.app[POOL], turn.service_actor) as conn:
            seconds = await conn.fetchval("SELECT parley.lease_bot_turn($1, $2)", turn.question_id, self.worker)
        return None if seconds is None else float(seconds)

    async def _keep_lease(self, turn: BotTurn, lease: float) -> None:
        """Renew the lease every third of it until the run ends; a lease that cannot be had any more
        marks the run lost."""
        while True:
            await asyncio.sleep(lease / 3)
            if turn.ended:
                return
            try:
                renewed = await self._lease(turn)
            except Exception as exc:  # the database away: the run goes on, and so do the renewals
                log.warning("bot turn lease not renewed: %s", type(exc).__name__)
                lease = RENEW_RETRY_S * 3
                continue
            if renewed is None:
                if not turn.ended:
                    turn.lost = True
                return
            lease = renewed

    # Pick-up -------------------------------------------------------------------
    async def pick(self) -> int:
        """Take the turns whose lease ran out (parley.pick_bot_turns) and run them, or give them up
        as SQL says; returns how many were taken."""
        pool = self.app[POOL]
        rows = await pool.fetch("SELECT * FROM parley.pick_bot_turns($1, $2)", self.worker, PICK_LIMIT)
        for row in rows:
            actor = Actor(row["tenant_id"], kind="service", actor_id="bot")
            try:
                if row["give_up"]:
                    async with tenant_tx(pool, actor) as conn:
                        await conn.fetchval("SELECT parley.give_up_bot_turn($1)", row["question_id"])
                    get_relay(self.app).wake(row["tenant_id"])
                    log.info("bot turn %s given up after %d runs", row["question_id"], row["attempts"] - 1)
                    continue
                async with tenant_tx(pool, actor) as conn:
                    found = await conn.fetchrow(_PICKED, row["conversation_id"], row["question_id"])
                    if found is None:  # the question is gone (erased): nothing to answer
                        await conn.fetchval("SELECT parley.end_bot_turn($1)", row["question_id"])
                        continue
            except asyncpg.PostgresError as exc:
                log.warning("bot turn %s not taken up: %s", row["question_id"], exc)
                continue
            message = {"id": row["question_id"], "author": "visitor", "body": found["body"]}
            turn = BotTurn(
                self.app,
                row["tenant_id"],
                found["chatbot_id"],
                row["conversation_id"],
                message,
                dict(found["config"] or {}),
            )
            self.picked += 1
            log.info("bot turn %s picked up (run %d)", row["question_id"], row["attempts"])
            self.schedule(turn)
        return len(rows)

    # Liveness -----------------------------------------------------------------
    async def live_forever(self) -> None:
        """Hold this server's liveness lock (parley.hold_server_lock) on a direct connection of its own
        for as long as the server runs, and again whenever that connection is lost: while it is held
        no other server picks up the turns named after this one before their lease runs out; when
        the process dies, PostgreSQL ends the session and the lock with it."""
        backoff = LIFE_BACKOFF_S[0]
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self.app[SETTINGS].listen_url, timeout=LIFE_CHECK_S, server_settings=LIFE_SESSION
                )
                lost = asyncio.get_running_loop().create_future()
                conn.add_termination_listener(lambda _c, lost=lost: lost.done() or lost.set_result(None))
                if not await conn.fetchval("SELECT parley.hold_server_lock($1)", self.worker):
                    raise LockBusy("its key held exclusively for over 2 s")
                self.alive.set()
                backoff = LIFE_BACKOFF_S[0]
                while not (await asyncio.wait([lost], timeout=LIFE_CHECK_S))[0]:
                    await conn.fetchval("SELECT 1", timeout=LIFE_CHECK_S)
                log.warning("liveness lock lost: its connection closed")
            except Exception as exc:  # the database away: other servers count this one dead meanwhile
                if isinstance(exc, LockBusy):
                    log.warning("liveness lock not taken: %s", exc)
                elif database_outage(exc):
                    log.warning("liveness lock lost: %s", type(exc).__name__)
                else:
                    log.exception("liveness lock lost")
            finally:
                self.alive.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(LIFE_BACKOFF_S[1], backoff * 2)

    async def pick_forever(self) -> None:
        every = float(self.app[SETTINGS].extra.get("bot_turn_pick_every") or PICK_EVERY_S)
        while True:
            try:
                while await self.pick() == PICK_LIMIT:  # more waiting: take them now
                    pass
            except Exception as exc:  # the database away: look again later
                if not database_outage(exc):
                    log.exception("bot turn pick-up failed")
            await asyncio.sleep(every)


RUNNER = web.AppKey("bot_turns", TurnRunner)


def turn_runner(app: web.Application) -> TurnRunner:
    return app[RUNNER]


def install(app: web.Application) -> None:
    """Give the app its turn runner, and look for turns to pick up while it serves (after the relay
    starts: install the relay first)."""
    if RUNNER in app:
        return
    runner = app[RUNNER] = TurnRunner(app)

    async def pick_ctx(app: web.Application):
        life = get_relay(app).spawn(runner.live_forever(), name="server-life")
        with contextlib.suppress(TimeoutError):  # alive before serving (the database may be away: serve anyway)
            await asyncio.wait_for(runner.alive.wait(), LIFE_START_S)
        task = get_relay(app).spawn(runner.pick_forever(), name="bot-turn-pick-up")
        yield
        task.cancel()
        life.cancel()  # its turns are picked up at once by the servers that remain

    app.cleanup_ctx.append(pick_ctx)
