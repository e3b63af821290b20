"""Bot turns are claims in the database (sql/53_bot_turns.sql, pyapp/widget/turns.py): a stored
question has its turn until what the turn says ends it; a turn whose server died is picked up by one
other server, answered once, or given up with the notice; a person taking the conversation first
silences it. (A server killed mid-answer, with real processes: tests/hardening/test_bot_turn_death.py.)

The questions here are stored straight through SQL, as the visitor socket stores them, with no server
running their turns: each test then plays the server that died by moving the turn's lease into the past,
or by naming the turn after a server whose liveness lock (parley.hold_server_lock) a test connection
holds and then lets go, as PostgreSQL does when a server's process dies."""
from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg
import pytest
from pyapp.assistant.responder import respond
from pyapp.context import POOL
from pyapp.db import Actor, tenant_tx
from pyapp.widget.hooks import BotTurn, visitor_hooks
from pyapp.widget.turns import turn_runner
from support.assistant import bot_messages, open_visitor, use_llm
from support.fakes.llm_servers import Reply
from support.realtime import visitor
from support.server import start_server
from support.waits import blocked_on_lock, until

ANSWER = "Refunds are possible within 30 days of purchase [1]."


@pytest.fixture(autouse=True)
def picks_only_when_told(settings):
    """The servers' own looks for turns to pick up wait an hour: each test picks (`pick()`) when it
    has made a turn whose server died."""
    settings.extra["bot_turn_pick_every"] = 3600


@pytest.fixture
async def other(settings):
    """A second server on the same database."""
    srv = await start_server(settings)
    yield srv
    await srv.close()


async def visitor_asks(server, bot, conversation_id, body: str, *, stored_by: str | None = None) -> int:
    """A visitor question stored as the socket stores it, with no server running its turn; its id. The
    turn is named after `server` (its pool's app.worker), or `stored_by` ('': unnamed)."""
    conv = uuid.UUID(str(conversation_id))
    async with tenant_tx(server.app[POOL], Actor(uuid.UUID(bot["tenant_id"]), kind="visitor", actor_id=str(conv),
                                                 min_role="visitor")) as conn:
        if stored_by is not None:
            await conn.execute("SELECT set_config('app.worker', $1, true)", stored_by)
        return await conn.fetchval("SELECT id FROM parley.post_message($1, 'visitor', $2, $3)", conv, body,
                                   uuid.uuid4().hex)


async def ask(server, bot, body: str = "Can I get a refund?", *, stored_by: str | None = None
              ) -> tuple[uuid.UUID, int]:
    """A new conversation and its visitor's question; (conversation, question id)."""
    async with tenant_tx(server.app[POOL], Actor(uuid.UUID(bot["tenant_id"]), kind="service",
                                                 min_role="visitor")) as conn:
        conv = await conn.fetchval("SELECT id FROM parley.start_conversation($1, $2)", bot["chatbot_id"], uuid.uuid4())
    return conv, await visitor_asks(server, bot, conv, body, stored_by=stored_by)


async def server_died(owner_conn, question: int) -> None:
    """The turn's server is gone: its lease ran out (as it does 20 s after the last renewal)."""
    await owner_conn.execute("UPDATE parley.bot_turns SET leased_by = 'dead-server', leased_until = now() - interval"
                             " '1 second' WHERE question_id = $1", question)


async def open_turns(owner_conn) -> list:
    return await owner_conn.fetch("SELECT question_id, attempts, leased_by FROM parley.bot_turns")


async def test_a_question_has_a_turn_until_its_answer_ends_it(server, bot, owner_conn, clients, fake_openai):
    fake_openai.script.append(Reply.text(ANSWER, delay=0.05))
    await use_llm(server, bot, "openai", fake_openai.base_url)
    session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "Can I get a refund?"})
    question = await v.expect_message(author="visitor")
    await v.expect(type="stream")
    turn = await open_turns(owner_conn)  # the model is answering: the turn is open, leased by this server
    assert [t["question_id"] for t in turn] == [question["id"]]
    answer = await v.expect_message(ANSWER, author="bot")
    stored = await owner_conn.fetchrow("SELECT client_id FROM parley.messages WHERE id = $1", answer["id"])
    assert stored["client_id"] == f"bot:{question['id']}"
    assert await open_turns(owner_conn) == []  # ended in the answer's transaction
    await v.send({"type": "message", "client_id": "c1", "body": "Can I get a refund?"})  # a resend: no new turn
    await v.expect_message("Can I get a refund?", author="visitor")
    assert await open_turns(owner_conn) == []
    assert len(fake_openai.requests) == 1
    # A run for a question whose turn has ended (SQL says there is none to run) says nothing.
    again = BotTurn(server.app, uuid.UUID(bot["tenant_id"]), bot["chatbot_id"], uuid.UUID(session["conversation_id"]),
                    {"id": question["id"], "body": "Can I get a refund?"}, {"language": "en"})
    await turn_runner(server.app).schedule(again)
    assert len(fake_openai.requests) == 1 and not again.ended
    assert len(await bot_messages(owner_conn, session["conversation_id"])) == 1


async def test_a_turn_whose_server_died_is_taken_by_one_of_two_pickers_and_answered_once(
        server, other, bot, owner_conn, fake_openai):
    fake_openai.default_reply = Reply.text(ANSWER)
    await use_llm(server, bot, "openai", fake_openai.base_url)
    conv, question = await ask(server, bot)
    await server_died(owner_conn, question)
    taken = await asyncio.gather(turn_runner(server.app).pick(), turn_runner(other.app).pick())
    assert sorted(taken) == [0, 1]
    [turn] = await open_turns(owner_conn)
    assert turn["attempts"] == 2
    await until(lambda: bot_messages(owner_conn, str(conv)), what="the picked-up turn's answer")
    await until(lambda: owner_conn.fetchval("SELECT count(*) = 0 FROM parley.bot_turns"), what="the turn ended")
    said = await bot_messages(owner_conn, str(conv))
    assert [(m["author"], m["body"]) for m in said] == [("bot", ANSWER)]
    assert len(fake_openai.requests) == 1
    # Nothing left to pick: a later look takes nothing.
    assert await turn_runner(other.app).pick() == 0


async def test_two_runs_of_one_turn_store_one_answer(server, bot, owner_conn, fake_openai):
    """A slow but live first run and a pick-up both reach the end of the model's answer: the question's
    key (bot:<question id>) lets the first store it, and the second stores nothing."""
    fake_openai.default_reply = Reply.text(ANSWER, delay=0.02)
    await use_llm(server, bot, "openai", fake_openai.base_url)
    conv, question = await ask(server, bot)
    message = {"id": question, "body": "Can I get a refund?"}
    runs = [BotTurn(server.app, uuid.UUID(bot["tenant_id"]), bot["chatbot_id"], conv, dict(message), {"language": "en"})
            for _ in range(2)]
    await asyncio.gather(*(respond(t) for t in runs))
    assert len(fake_openai.requests) == 2  # both ran the model
    said = await bot_messages(owner_conn, str(conv))
    assert [(m["author"], m["body"]) for m in said] == [("bot", ANSWER)]
    assert sorted(t.ended_here for t in runs) == [False, True]
    assert await open_turns(owner_conn) == []
    logged = await owner_conn.fetchval("SELECT count(*) FROM parley.assistant_turns WHERE question_message_id = $1",
                                       question)
    assert logged == 1


async def test_a_person_taking_over_before_the_pick_up_silences_the_turn(server, bot, owner_conn, fake_openai):
    await use_llm(server, bot, "openai", fake_openai.base_url)
    conv, question = await ask(server, bot)
    await owner_conn.execute("UPDATE parley.conversations SET status = 'human', assignee_id = $2 WHERE id = $1",
                             conv, uuid.UUID(bot["user_id"]))
    await server_died(owner_conn, question)
    assert await turn_runner(server.app).pick() == 1
    await until(lambda: owner_conn.fetchval("SELECT count(*) = 0 FROM parley.bot_turns"), what="the turn ended")
    assert await bot_messages(owner_conn, str(conv)) == []
    assert fake_openai.requests == []


async def test_an_old_turn_is_given_up_with_the_notice_not_answered(server, bot, owner_conn, clients, fake_openai):
    await use_llm(server, bot, "openai", fake_openai.base_url)
    session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "Can I get a refund?"})
    await v.expect_message(author="bot")  # the first question is answered as usual
    conv = uuid.UUID(session["conversation_id"])
    question = await visitor_asks(server, bot, conv, "And shipping?")
    await owner_conn.execute("UPDATE parley.bot_turns SET asked_at = now() - interval '1 hour' WHERE question_id = $1",
                             question)
    await server_died(owner_conn, question)
    assert await turn_runner(server.app).pick() == 1
    notice = await v.expect_message(author="system")
    assert "unavailable" in notice["body"] and notice["offer_human"] is True
    said = await bot_messages(owner_conn, str(conv))
    assert [(m["author"], m["meta"].get("notice")) for m in said] == [("bot", None), ("system", "assistant_unavailable")]
    stored = await owner_conn.fetchval("SELECT client_id FROM parley.messages WHERE id = $1", notice["id"])
    assert stored == f"bot:{question}"
    assert await open_turns(owner_conn) == []
    assert len(fake_openai.requests) == 1  # only the first question's


async def test_a_turn_is_given_up_after_its_runs(server, bot, owner_conn, fake_openai):
    await use_llm(server, bot, "openai", fake_openai.base_url)
    conv, question = await ask(server, bot)
    await owner_conn.execute("UPDATE parley.bot_turns SET attempts = 3 WHERE question_id = $1", question)
    await server_died(owner_conn, question)  # the third run's server died too
    assert await turn_runner(server.app).pick() == 1
    said = await until(lambda: bot_messages(owner_conn, str(conv)), what="the notice")
    assert [(m["author"], m["meta"].get("notice")) for m in said] == [("system", "assistant_unavailable")]
    assert fake_openai.requests == []
    outcome = await owner_conn.fetchval("SELECT outcome FROM parley.assistant_turns WHERE question_message_id = $1",
                                        question)
    assert outcome == "error"


async def test_a_run_that_lost_its_turn_says_nothing(server, bot, owner_conn, clients, fake_openai):
    """The model is slow; meanwhile the turn went to another server (this one looked dead): this run
    stops at its next renewal and stores nothing, the other answers."""
    await owner_conn.execute("INSERT INTO parley.server_settings (name, value) VALUES ('bot_turn_lease', '1 second')")
    fake_openai.script.append(Reply.text("A slow answer that is never stored.", delay=0.3))
    await use_llm(server, bot, "openai", fake_openai.base_url)
    session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "Can I get a refund?"})
    question = await v.expect_message(author="visitor")
    await v.expect(type="stream")
    await owner_conn.execute("UPDATE parley.bot_turns SET leased_by = 'another-server' WHERE question_id = $1",
                             question["id"])
    await v.expect(lambda f: f.get("type") == "typing" and f.get("on") is False)
    assert await bot_messages(owner_conn, session["conversation_id"]) == []
    [turn] = await open_turns(owner_conn)  # still the other server's to answer
    assert turn["leased_by"] == "another-server"


async def test_a_visitor_on_another_server_gets_the_picked_up_answer(
        server, other, bot, owner_conn, clients, fake_openai):
    fake_openai.default_reply = Reply.text(ANSWER)
    await use_llm(server, bot, "openai", fake_openai.base_url)
    session, v = await open_visitor(server, bot, clients)
    question = await visitor_asks(server, bot, session["conversation_id"], "Refund?")
    await server_died(owner_conn, question)
    assert await turn_runner(other.app).pick() == 1
    answer = await v.expect_message(ANSWER, author="bot")
    v2 = await visitor(server, session, last_seen_id=question)  # and on reconnect, in the replay
    clients.append(v2)
    assert (await v2.expect_message(ANSWER, author="bot"))["id"] == answer["id"]


async def test_a_run_begins_with_sql_saying_the_turn_is_its_own(server, bot, owner_conn, clients):
    """No transaction of its own claims a turn just stored: the responder's first transaction finds it
    unnamed (its lease counted from the question; the first renewal names it), SQL having said first in
    that transaction that it is this run's (parley.run_bot_turn). A question asked while the one before
    it is being answered waits named, its lease renewed. A turn another server holds is never run."""
    seen: dict[int, tuple] = {}
    first_may_answer = asyncio.Event()

    async def responder(turn: BotTurn) -> None:
        async with turn.service_tx() as conn:
            seen[turn.question_id] = tuple(await conn.fetchrow(
                "SELECT leased_by, leased_until FROM parley.bot_turns WHERE question_id = $1", turn.question_id))
        if len(seen) == 1:
            await first_may_answer.wait()
        await turn.reply(f"answer to {turn.message['body']}")

    visitor_hooks(server.app).set_bot_responder(responder)
    runner = turn_runner(server.app)
    _session, v = await open_visitor(server, bot, clients)
    await v.send({"type": "message", "client_id": "c1", "body": "first"})
    first = await v.expect_message("first", author="visitor")
    await until(lambda: first["id"] in seen, what="the first turn's responder")
    # Named after the server that stored it, its lease counted from the question: no transaction of its own.
    assert seen == {first["id"]: (runner.worker, None)}
    await v.send({"type": "message", "client_id": "c2", "body": "second"})
    second = await v.expect_message("second", author="visitor")
    await until(lambda: owner_conn.fetchval("SELECT leased_until IS NOT NULL FROM parley.bot_turns"
                                            " WHERE question_id = $1", second["id"]), what="the waiting turn leased")
    first_may_answer.set()
    await v.expect_message("answer to first", author="bot")
    await v.expect_message("answer to second", author="bot")
    assert seen[second["id"]][0] == runner.worker and seen[second["id"]][1] is not None
    assert await open_turns(owner_conn) == []

    conv, question = await ask(server, bot, "third")
    await owner_conn.execute("UPDATE parley.bot_turns SET leased_by = 'another-server', leased_until = now()"
                             " + interval '1 minute' WHERE question_id = $1", question)
    run = BotTurn(server.app, uuid.UUID(bot["tenant_id"]), bot["chatbot_id"], conv,
                  {"id": question, "body": "third"}, {"language": "en"})
    await runner.schedule(run)
    assert question not in seen and run.lost and not run.ended
    [turn] = await open_turns(owner_conn)
    assert turn["leased_by"] == "another-server"
    assert await bot_messages(owner_conn, str(conv)) == []


async def test_a_run_whose_lease_ran_out_takes_it_unless_a_pick_up_has_it(server, bot, owner_conn, living):
    """parley.run_bot_turn on a turn whose lease ran out before its run began (its server stalled
    past bot_turn_lease): it is leased to the run, as lease_bot_turn does; once one server holds it
    another's run gets NULL. And a run that meets a pick-up taking the same turn waits for the
    pick-up's row lock, then gets NULL: the pick-up's, never both."""
    actor = Actor(uuid.UUID(bot["tenant_id"]), kind="service", actor_id="bot", min_role="visitor")
    pool = server.app[POOL]

    async def run(question: int, worker: str):
        async with tenant_tx(pool, actor) as conn:
            return await conn.fetchval("SELECT parley.run_bot_turn($1, $2)", question, worker)

    async def lapse(question: int) -> None:  # stored (unnamed) more than a lease ago
        await owner_conn.execute("UPDATE parley.bot_turns SET asked_at = now() - interval '1 minute'"
                                 " WHERE question_id = $1", question)

    lease = await owner_conn.fetchval("SELECT extract(epoch FROM parley.bot_turn_lease())::float8")
    await living("server-a", "server-b", "picker")  # servers give their names only while they live
    _, fresh = await ask(server, bot, "fresh", stored_by="server-a")
    assert await run(fresh, "server-b") is None  # named after the server that stored it: only it runs it
    assert 0 < await run(fresh, "server-a") <= lease  # its lease still runs: only read
    assert [tuple(t) for t in await owner_conn.fetch("SELECT leased_by, leased_until FROM parley.bot_turns")] == [
        ("server-a", None)]
    _, unnamed = await ask(server, bot, "unnamed", stored_by="")  # stored where no server name is set
    assert 0 < await run(unnamed, "server-b") <= lease  # any server's run: only read, left unnamed
    assert await owner_conn.fetchval("SELECT leased_by FROM parley.bot_turns WHERE question_id = $1", unnamed) is None

    await lapse(fresh)
    assert await run(fresh, "server-a") == lease  # ran out: taken for a whole lease, named
    assert await owner_conn.fetchval("SELECT leased_by FROM parley.bot_turns WHERE question_id = $1",
                                     fresh) == "server-a"
    assert await run(fresh, "server-b") is None  # another server's now
    # (A pick-up would take it at once if server-a died: not what this test is about.)
    await owner_conn.execute("DELETE FROM parley.bot_turns WHERE question_id = $1", fresh)

    _, late = await ask(server, bot, "late")  # named after the live `server`: picked once its lease ran out
    await lapse(late)
    picker = await pool.acquire()
    try:
        pick = picker.transaction()
        await pick.start()
        [picked] = await picker.fetch("SELECT * FROM parley.pick_bot_turns('picker', 10)")
        assert picked["question_id"] == late
        running = asyncio.create_task(run(late, turn_runner(server.app).worker))  # its own server
        await blocked_on_lock(owner_conn)  # the run's lease waits for the pick-up's row lock
        await pick.commit()
    finally:
        await pool.release(picker)
    assert await running is None
    assert await owner_conn.fetchval("SELECT leased_by FROM parley.bot_turns WHERE question_id = $1",
                                     late) == "picker"



async def alive(owner_conn, worker: str) -> bool:
    """Whether server `worker` holds its liveness lock in this database (parley.live_server_keys)."""
    return await owner_conn.fetchval(
        "SELECT parley.server_lock_key($1)::oid IN (SELECT parley.live_server_keys())", worker)


@pytest.fixture
async def doomed(settings, owner_conn):
    """A server's name whose liveness lock a session of its own holds, as a server holds it, and how it
    dies: the session ends (as PostgreSQL ends it when the server's process dies), the lock with it."""
    name = f"doomed-{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(settings.app_url)
    assert await conn.fetchval("SELECT parley.hold_server_lock($1)", name)

    async def dies() -> None:
        await conn.close()

        async def gone() -> bool:
            return not await alive(owner_conn, name)

        await until(gone, what="the dead server's lock gone")

    yield name, dies
    if not conn.is_closed():
        await conn.close()



@pytest.fixture
async def living(settings):
    """Hold the liveness locks of the named servers on a session of their own, as live servers do."""
    conn = await asyncpg.connect(settings.app_url)

    async def hold(*names: str) -> None:
        for name in names:
            assert await conn.fetchval("SELECT parley.hold_server_lock($1)", name)

    yield hold
    await conn.close()


async def test_a_server_without_its_liveness_lock_names_no_turn(server, bot, owner_conn, living):
    """A server whose liveness connection is refused (max_connections, the role's CONNECTION LIMIT) while
    its pool still serves stores, renews and picks up turns unnamed, to their lease: named after it, a
    turn it was running was taken at once by any other server as one whose server died, and two such
    servers took each other's turns at every look until bot_turn_attempts gave the visitor the notice
    (failed on the old code: named, picked at once, and given up by the third look)."""
    pool = server.app[POOL]
    actor = Actor(uuid.UUID(bot["tenant_id"]), kind="service", actor_id="bot", min_role="visitor")

    async def pick(worker: str) -> list:
        return [tuple(r) for r in await pool.fetch(
            "SELECT question_id, attempts, give_up FROM parley.pick_bot_turns($1, 10)", worker)]

    async def turn(question: int) -> tuple:
        return tuple(await owner_conn.fetchrow("SELECT leased_by, attempts FROM parley.bot_turns"
                                               " WHERE question_id = $1", question))

    _, question = await ask(server, bot, stored_by="lockless-a")
    assert await turn(question) == (None, 1)  # stored unnamed
    async with tenant_tx(pool, actor) as conn:  # its run renews it: still unnamed
        assert await conn.fetchval("SELECT parley.run_bot_turn($1, 'lockless-a')", question) > 0
        assert await conn.fetchval("SELECT parley.lease_bot_turn($1, 'lockless-a')", question) > 0
    assert await turn(question) == (None, 1)
    assert await pick("lockless-b") == [] and await pick("lockless-a") == []  # its lease runs
    await owner_conn.execute("UPDATE parley.bot_turns SET leased_until = now() - interval '1 second'"
                             " WHERE question_id = $1", question)  # the lease ran out: picked, once
    assert await pick("lockless-b") == [(question, 2, False)]
    assert await turn(question) == (None, 2)
    for _ in range(3):  # a picker without its lock leaves it to its lease, not to the next look
        assert await pick("lockless-a") == [] and await pick("lockless-b") == []
    async with tenant_tx(pool, actor) as conn:  # the picker's run is admitted and renews it
        assert await conn.fetchval("SELECT parley.run_bot_turn($1, 'lockless-b')", question) > 0
    # A server that lives names what it stores and renews, as before.
    await living("living-c")
    _, named = await ask(server, bot, stored_by="living-c")
    assert await turn(named) == ("living-c", 1)
    assert await pick("lockless-b") == []


async def test_a_turn_is_left_to_its_server_while_it_lives_and_picked_once_it_died(
        server, other, bot, owner_conn, fake_openai, doomed):
    """Named after the server that stored it, a turn is not picked while that server holds its liveness
    lock and its lease runs; once the server died (its lock gone) it is taken at once, its lease still
    running: by one of two pickers, counting the run, and answered once."""
    fake_openai.default_reply = Reply.text(ANSWER)
    await use_llm(server, bot, "openai", fake_openai.base_url)
    owner = turn_runner(server.app)
    assert await alive(owner_conn, owner.worker)
    _, own = await ask(server, bot)  # stored by a live server (the `server` fixture's)
    assert await owner_conn.fetchval("SELECT leased_by FROM parley.bot_turns WHERE question_id = $1",
                                     own) == owner.worker
    name, dies = doomed
    conv, question = await ask(server, bot, stored_by=name)
    assert await turn_runner(other.app).pick() == 0  # both servers alive, both leases running
    await dies()
    taken = await asyncio.gather(owner.pick(), turn_runner(other.app).pick())
    assert sorted(taken) == [0, 1]
    turns = {t["question_id"]: t for t in await open_turns(owner_conn)}
    assert turns[question]["attempts"] == 2 and turns[question]["leased_by"] in (owner.worker,
                                                                                 turn_runner(other.app).worker)
    assert turns[own]["attempts"] == 1 and turns[own]["leased_by"] == owner.worker  # its server lives
    said = await until(lambda: bot_messages(owner_conn, str(conv)), what="the picked-up turn's answer")
    await until(lambda: owner_conn.fetchval("SELECT count(*) = 0 FROM parley.bot_turns WHERE question_id = $1",
                                            question), what="the turn ended")
    assert [(m["author"], m["body"]) for m in said] == [("bot", ANSWER)]
    assert len(fake_openai.requests) == 1
    assert await turn_runner(other.app).pick() == 0  # the live server's turn still waits for its lease


async def test_an_unnamed_turn_keeps_the_lease_rule(server, other, bot, owner_conn, fake_openai):
    """A turn stored where no server name is set (another process, a pool behind a transaction pooler)
    has no server to be found dead: it is picked only once its lease ran out, as before."""
    fake_openai.default_reply = Reply.text(ANSWER)
    await use_llm(server, bot, "openai", fake_openai.base_url)
    conv, question = await ask(server, bot, stored_by="")
    [turn] = await open_turns(owner_conn)
    assert turn["leased_by"] is None
    assert await turn_runner(other.app).pick() == 0
    await owner_conn.execute("UPDATE parley.bot_turns SET asked_at = now() - interval '1 minute'"
                             " WHERE question_id = $1", question)  # its lease ran out
    assert await turn_runner(other.app).pick() == 1
    await until(lambda: bot_messages(owner_conn, str(conv)), what="the picked-up turn's answer")


async def test_a_server_name_that_does_not_fit_stores_the_turn_unnamed(server, bot, owner_conn):
    """A setting too long for a turn's leased_by never refuses the visitor's message: the turn is unnamed."""
    _, question = await ask(server, bot, stored_by="x" * 201)
    assert await owner_conn.fetchval("SELECT leased_by FROM parley.bot_turns WHERE question_id = $1",
                                     question) is None


async def test_a_server_holds_its_liveness_lock_again_after_losing_its_connection(server, owner_conn):
    """The liveness connection ended from outside (a restart, pg_terminate_backend): the server counts
    as dead meanwhile, then takes its lock again on a new connection."""
    runner = turn_runner(server.app)
    key = await owner_conn.fetchval("SELECT parley.server_lock_key($1)::oid", runner.worker)
    pid = await owner_conn.fetchval("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 7261015"
                                    " AND objid = $1 AND database = (SELECT oid FROM pg_database"
                                    " WHERE datname = current_database())", key)
    assert await owner_conn.fetchval("SELECT pg_terminate_backend($1)", pid)

    async def again() -> bool:
        held = await owner_conn.fetchval("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 7261015"
                                         " AND objid = $1 AND database = (SELECT oid FROM pg_database"
                                         " WHERE datname = current_database())", key)
        return held is not None and held != pid

    await until(again, what="the liveness lock held again")
    assert runner.alive.is_set()


async def test_liveness_is_probed_without_reading_pg_locks(settings, owner_conn, living):
    """live_server_name probes the server's lock key (no pg_locks read on every stored question): a
    held liveness lock is seen by concurrent transactions; a missing one is missed by all of them,
    also while another transaction's probe keeps the key; the probe never makes a dead server look
    alive to pick_bot_turns; and the server's liveness connection waits the probe out."""
    first, second, life = [await asyncpg.connect(settings.app_url) for _ in range(3)]
    try:
        await living("probed-live")
        async with first.transaction(), second.transaction():
            for conn in (first, second, first):
                assert await conn.fetchval("SELECT parley.live_server_name('probed-live')") == "probed-live"
                assert await conn.fetchval("SELECT parley.live_server_name('probed-dead')") is None
        async with first.transaction():
            assert await first.fetchval("SELECT parley.live_server_name('probed-dead')") is None
            async with second.transaction():  # the first probe keeps the key: still not alive
                assert await second.fetchval("SELECT parley.live_server_name('probed-dead')") is None
            assert not await alive(owner_conn, "probed-dead")
            taking = asyncio.create_task(life.fetchval("SELECT parley.hold_server_lock('probed-dead')"))
            await blocked_on_lock(owner_conn)
        assert await taking is True  # taken once the probing transaction ended
        assert await alive(owner_conn, "probed-dead")
        assert await second.fetchval("SELECT parley.live_server_name('probed-dead')") == "probed-dead"
        assert await second.fetchval("SELECT parley.live_server_name($1)", "x" * 201) is None  # too long a name
    finally:
        for conn in (first, second, life):
            await conn.close()


async def test_a_later_question_is_answered_after_an_earlier_turn_open_elsewhere(
        server, bot, owner_conn, fake_openai, doomed, caplog):
    """A conversation's turns in order across servers: its question stored on a live server while its
    earlier question is still open elsewhere (there: the server that stored it died before answering,
    and no look has picked it up yet) waits for that turn, which is answered first (failed on the old
    code: the later question was answered at once, before the earlier one)."""
    caplog.set_level(logging.INFO, logger="parley.widget.turns")
    fake_openai.default_reply = Reply.text(ANSWER)
    await use_llm(server, bot, "openai", fake_openai.base_url)
    name, dies = doomed
    conv, first = await ask(server, bot, "Can I get a refund?", stored_by=name)
    await dies()
    second = await visitor_asks(server, bot, conv, "And how long is shipping?")  # on the live `server`
    runner = turn_runner(server.app)
    runner.schedule(BotTurn(server.app, uuid.UUID(bot["tenant_id"]), bot["chatbot_id"], conv,
                            {"id": second, "body": "And how long is shipping?"}, {"language": "en"}))
    await until(lambda: any(f"bot turn {second} waits" in r.getMessage() for r in caplog.records),
                what="the later turn to wait for the earlier one")
    assert fake_openai.requests == []
    assert await runner.pick() == 1  # the dead server's turn, the conversation's oldest
    await until(lambda: owner_conn.fetchval("SELECT count(*) = 0 FROM parley.bot_turns"), what="both turns ended")
    said = await owner_conn.fetch("SELECT client_id FROM parley.messages WHERE conversation_id = $1"
                                  " AND author = 'bot' ORDER BY id", conv)
    assert [m["client_id"] for m in said] == [f"bot:{first}", f"bot:{second}"]
    assert len(fake_openai.requests) == 2
