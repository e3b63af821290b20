-- Bot turns: the bot's answer to a visitor message, owed from the message's own transaction until
-- the transaction that ends it, whichever server runs it (pyapp/assistant/turns.py).
--
-- * What needs a turn: a visitor message that leaves its conversation with the bot. store_message
--   (44_messages.sql) writes the turn in the message's transaction, so a stored question always has
--   one, and a resend (the same client_id) none.
-- * The turn names the server that stored it from the start: store_message writes leased_by from
--   the session setting app.worker that the server's pooled connections carry (storing_server);
--   NULL (unnamed) where it is unset (another process, a pool behind a transaction pooler) or where
--   that server holds no liveness lock (live_server_name: only a live server gives its name, to a
--   turn it stores, renews or picks up).
-- * The server that stored the question runs the turn at once. Its lease (bot_turn_lease in the
--   installation settings, 20 s) is counted from the question (leased_until NULL) until the server's
--   first renewal, a third of the lease in (lease_bot_turn, which names an unnamed turn); then
--   renewed every third of the lease while the turn runs (the model streaming, or the turn waiting
--   behind the conversation's earlier turn, which is leased before it waits). A lease that is lost
--   (the turn ended elsewhere, or another server took it) stops the run, silently.
-- * A server says it lives by holding, on a connection of its own, a session-level advisory lock
--   named after it (hold_server_lock: class 7261015, shared, so two names that hash alike never
--   wait for each other). When its process dies (SIGKILL, OOM, a deploy) PostgreSQL ends the
--   session and the lock goes with it, at once; a server whose lock connection is down counts as
--   dead too. Liveness only hastens a pick-up: whoever runs a turn is still decided by the lease
--   and its row lock, so a server wrongly taken for dead loses its lease at its next renewal, or
--   stores nothing, as a slow server does.
-- * A run begins nothing before SQL says the turn is its own: the first transaction of the run
--   (whatever the responder reads or writes first) asks run_bot_turn before anything else, so a
--   question with no open turn (answered elsewhere, needing none) or one another server holds is
--   never run, and a turn just stored costs no transaction of its own to claim.
-- * A turn whose lease ran out (its server died, or lost the database), or whose named server
--   holds no liveness lock in this database (it died: no need to wait for the lease), is picked up
--   by any live server (pick_bot_turns, FOR UPDATE SKIP LOCKED: one picker per turn), the oldest
--   open turn of a conversation first, so a conversation's turns still run in order. An unnamed
--   turn is picked only when its lease ran out.
-- * A turn ends in the transaction of what it says (end_bot_turn there): the answer, a notice
--   (assistant_unavailable, ai_quota), the handoff, or nothing (a person took the conversation, the
--   question was empty). Every message a turn ends with is stored under its question's key, client_id
--   bot:<question id>, which post_message keeps unique per conversation: of a slow but live first
--   run and a pick-up, whichever stores first says it, and the other stores nothing.
-- * A turn picked up after bot_turn_attempts runs (3), or later than bot_turn_max_age (10 minutes)
--   after its question, is given up (give_up_bot_turn): not answered; while the conversation is still
--   the bot's, the visitor gets the assistant_unavailable notice offering a person.

SELECT parley.apply_tenant_policies('parley.bot_turns');
GRANT SELECT, INSERT, DELETE ON parley.bot_turns TO parley_app;
GRANT UPDATE (attempts, leased_by, leased_until) ON parley.bot_turns TO parley_app;
-- The cross-tenant pick (owned by parley_auth, BYPASSRLS).
GRANT SELECT, UPDATE (attempts, leased_by, leased_until) ON parley.bot_turns TO parley_auth;
-- Jobs delete conversations (retention, purges): the cascade reaches their turns.
GRANT SELECT, DELETE ON parley.bot_turns TO parley_jobs;

CREATE OR REPLACE FUNCTION parley.bot_turn_lease() RETURNS interval
LANGUAGE sql STABLE
AS $$ SELECT greatest(parley.server_setting('bot_turn_lease', NULL::interval), interval '1 second') $$;
COMMENT ON FUNCTION parley.bot_turn_lease() IS
  'How long a bot turn stays with the server running it without a renewal: the installation setting bot_turn_lease (default 20 s; at least 1 s).';

CREATE OR REPLACE FUNCTION parley.server_lock_key(p_worker text) RETURNS int
LANGUAGE sql IMMUTABLE
AS $$ SELECT hashtext(p_worker) $$;
COMMENT ON FUNCTION parley.server_lock_key(text) IS
  'The second key of server p_worker''s liveness lock (the first is 7261015; hold_server_lock). Two names may share one: then a dead server can look alive, and its turns wait for their lease as unnamed ones do; never the other way.';

CREATE OR REPLACE FUNCTION parley.hold_server_lock(p_worker text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET lock_timeout = '2s'
AS $$
BEGIN
  -- Waits out a live_server_name probe (an exclusive transaction lock on the same key, held to the
  -- end of a transaction of this server's while it had no liveness lock).
  PERFORM pg_advisory_lock_shared(7261015, parley.server_lock_key(p_worker));
  RETURN true;
EXCEPTION WHEN lock_not_available THEN
  RETURN false;
END $$;
COMMENT ON FUNCTION parley.hold_server_lock(text) IS
  'Server p_worker says it lives, once, on a connection of its own that it keeps open (not a pooled one): a session-level shared advisory lock (7261015, server_lock_key) held until that session ends, which PostgreSQL ends as soon as the server''s process dies. While it is held, pick_bot_turns leaves the turns named after p_worker to their lease; once it is gone it takes them at once. True when held; false when the key stayed held exclusively for 2 s (live_server_name''s probes hold it so only to the end of their transaction).';

CREATE OR REPLACE FUNCTION parley.live_server_keys() RETURNS SETOF oid
LANGUAGE sql VOLATILE
AS $$
  SELECT l.objid FROM pg_catalog.pg_locks l
   WHERE l.locktype = 'advisory' AND l.classid = 7261015 AND l.objsubid = 2 AND l.granted
     AND l.mode = 'ShareLock'  -- not live_server_name's exclusive probe
     AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
$$;
COMMENT ON FUNCTION parley.live_server_keys() IS
  'The server_lock_key (as pg_locks shows it: an oid, compare key::oid) of every server alive now in this database: those holding their liveness lock (hold_server_lock, shared), one row per holder (a key twice when two names share it). Reads pg_locks, which takes every lock-manager partition: for pick_bot_turns'' look every few seconds, not for every stored question (live_server_name).';

-- A server's name as a turn may carry it: only while that server holds its liveness lock. A name is
-- what lets pick_bot_turns take a turn at once when the lock is gone, so a server that holds none (its
-- liveness connection refused, max_connections or the role's CONNECTION LIMIT reached, while its pool
-- still serves) must not give its name: every turn it stored was taken by another server within
-- seconds while it ran it too, and two such servers took each other's turns at every look until
-- bot_turn_attempts gave the visitor the notice instead of an answer. Its turns stay unnamed and keep
-- the lease rule, as where no name is set.
CREATE OR REPLACE FUNCTION parley.live_server_name(p_worker text) RETURNS text
LANGUAGE sql VOLATILE
AS $$
  -- Two probes of the key, neither waiting (CASE tries them in order): an exclusive one is granted
  -- only when no other session holds the key, so the server holds no liveness lock (and this
  -- transaction keeps the key to its end: another probe of it now fails both ways, hold_server_lock
  -- waits); a shared one is granted when the holder holds it shared, as the liveness lock is.
  SELECT CASE WHEN p_worker IS NULL OR length(p_worker) > 200 THEN NULL
              WHEN pg_try_advisory_xact_lock(7261015, parley.server_lock_key(p_worker)) THEN NULL
              WHEN pg_try_advisory_xact_lock_shared(7261015, parley.server_lock_key(p_worker)) THEN p_worker
         END
$$;
COMMENT ON FUNCTION parley.live_server_name(text) IS
  'p_worker when that server holds its liveness lock in this database now (hold_server_lock) and the name fits a turn''s leased_by, else NULL: the name a bot turn may be given (storing_server, lease_bot_turn, pick_bot_turns), so that only a server that lives names turns and pick_bot_turns'' "its server died" means it. Two advisory-lock probes of its key, no pg_locks read; a probe that finds no holder keeps the key exclusively to the end of the transaction. Never call it on the liveness lock''s own session (a session never conflicts with itself).';

CREATE OR REPLACE FUNCTION parley.storing_server() RETURNS text
LANGUAGE sql VOLATILE
AS $$ SELECT parley.live_server_name(w.name) FROM nullif(current_setting('app.worker', true), '') AS w(name) $$;
COMMENT ON FUNCTION parley.storing_server() IS
  'The server whose connection runs this transaction, as the bot turns it stores are named (store_message): the session setting app.worker its pooled connections carry from their start (pyapp.db.create_pool), when that server holds its liveness lock (live_server_name). NULL when unset (other processes, a pool behind a transaction pooler), too long for a turn''s leased_by, or the server holds no liveness lock: the turn then runs unnamed and keeps the lease rule.';

CREATE OR REPLACE FUNCTION parley.lease_bot_turn(p_question_id bigint, p_worker text) RETURNS double precision
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.bot_turns t
     -- named after p_worker only while it lives (live_server_name; a named turn keeps its name)
     SET leased_by = CASE WHEN t.leased_by IS NOT NULL THEN t.leased_by ELSE parley.live_server_name(p_worker) END,
         leased_until = now() + parley.bot_turn_lease()
   WHERE t.tenant_id = (SELECT parley.current_tenant_id()) AND t.question_id = p_question_id
     AND (t.leased_by IS NULL OR t.leased_by = p_worker)
  RETURNING extract(epoch FROM parley.bot_turn_lease())::double precision
$$;
COMMENT ON FUNCTION parley.lease_bot_turn(bigint, text) IS
  'The server running a bot turn of the current tenant takes or renews its lease under its own name p_worker (a turn stored where no server name was set runs unnamed until then; an unnamed turn is named only while p_worker holds its liveness lock, live_server_name). Returns the lease in seconds (renew within a third of it), or NULL when the turn is no longer this server''s to run: ended (answered elsewhere, given up) or picked up by another server. Then stop, saying nothing.';

CREATE OR REPLACE FUNCTION parley.run_bot_turn(p_question_id bigint, p_worker text) RETURNS double precision
LANGUAGE sql VOLATILE
AS $$
  SELECT coalesce(
    -- Its lease still runs, unnamed or under p_worker's name (a turn just stored: counted from
    -- asked_at): a read, no write.
    (SELECT extract(epoch FROM coalesce(t.leased_until, t.asked_at + parley.bot_turn_lease()) - now())::double precision
       FROM parley.bot_turns t
      WHERE t.tenant_id = (SELECT parley.current_tenant_id()) AND t.question_id = p_question_id
        AND (t.leased_by IS NULL OR t.leased_by = p_worker)
        AND coalesce(t.leased_until, t.asked_at + parley.bot_turn_lease()) > now()),
    -- Its lease ran out, or the turn is gone or another server's: take it as lease_bot_turn does
    -- (the row lock it waits for makes it and a pick-up exclude each other), else NULL.
    parley.lease_bot_turn(p_question_id, p_worker))
$$;
COMMENT ON FUNCTION parley.run_bot_turn(bigint, text) IS
  'The first statement of a bot turn''s run by server p_worker (in the run''s first transaction of the current tenant, before anything is read for the answer): the seconds its lease still runs (renew, lease_bot_turn, within a third of them), or NULL when the turn is not this run''s: ended (answered elsewhere, given up, or never needed) or held by another server. Then stop, saying nothing. A turn whose lease still runs, unnamed or under p_worker (just stored: counted from asked_at), is only read; one whose lease ran out is leased to p_worker as lease_bot_turn does, unless a pick-up has it.';

-- A conversation's turns in order across servers too: a question stored on one server while the
-- conversation's earlier question still has its turn open (another server runs it, or it waits for a
-- pick-up because its server died) is answered after it, not before.
CREATE OR REPLACE FUNCTION parley.earlier_bot_turn_open(p_question_id bigint) RETURNS boolean
LANGUAGE sql STABLE
AS $$
  SELECT EXISTS (SELECT 1 FROM parley.bot_turns t
                   JOIN parley.bot_turns e ON e.tenant_id = t.tenant_id AND e.conversation_id = t.conversation_id
                                          AND e.question_id < t.question_id
                  WHERE t.tenant_id = (SELECT parley.current_tenant_id()) AND t.question_id = p_question_id)
$$;
COMMENT ON FUNCTION parley.earlier_bot_turn_open(bigint) IS
  'Whether the conversation of question p_question_id (current tenant) has an open bot turn of an earlier question: the run of this one then waits for it (pyapp/widget/turns.py), as pick_bot_turns takes only a conversation''s oldest open turn.';

CREATE OR REPLACE FUNCTION parley.end_bot_turn(p_question_id bigint) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$
  WITH ended AS (
    DELETE FROM parley.bot_turns t
     WHERE t.tenant_id = (SELECT parley.current_tenant_id()) AND t.question_id = p_question_id
    RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM ended)
$$;
COMMENT ON FUNCTION parley.end_bot_turn(bigint) IS
  'End the bot turn of question p_question_id of the current tenant, in the transaction of what the turn says (its answer, a notice, the handoff) or alone when it says nothing. True when it was open; false when it had already ended (then what this run stores under bot:<question id> is a resend of what the other stored).';

CREATE OR REPLACE FUNCTION parley.pick_bot_turns(p_worker text, p_limit int)
RETURNS TABLE (tenant_id uuid, conversation_id uuid, question_id bigint, attempts int, give_up boolean)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
  WITH rules AS (
    SELECT parley.bot_turn_lease() AS lease,
           parley.server_setting('bot_turn_attempts', NULL::integer) AS max_attempts,
           parley.server_setting('bot_turn_max_age', NULL::interval) AS max_age),
  live AS MATERIALIZED (SELECT k.key FROM parley.live_server_keys() AS k(key)),  -- read once, when needed
  me AS MATERIALIZED (SELECT parley.live_server_name(p_worker) AS name)
  UPDATE parley.bot_turns t
     -- named after the picker only while it lives: a picker holding no liveness lock leaves the turn
     -- unnamed, to its lease (else two such servers took each other's turns at every look)
     SET leased_by = (SELECT me.name FROM me),
         leased_until = now() + r.lease, attempts = t.attempts + 1
    FROM rules r,
         (SELECT b.tenant_id, b.question_id FROM parley.bot_turns b
            JOIN parley.tenants n ON n.id = b.tenant_id AND n.deleted_at IS NULL
           WHERE (coalesce(b.leased_until, b.asked_at + (SELECT lease FROM rules)) < now()
                  -- or named after another server that holds no liveness lock: it died
                  OR (b.leased_by IS NOT NULL AND b.leased_by <> p_worker
                      AND NOT EXISTS (SELECT 1 FROM live WHERE live.key = parley.server_lock_key(b.leased_by)::oid)))
             AND NOT EXISTS (SELECT 1 FROM parley.bot_turns e  -- a conversation's turns in order
                              WHERE e.tenant_id = b.tenant_id AND e.conversation_id = b.conversation_id
                                AND e.question_id < b.question_id)
           ORDER BY b.asked_at
           LIMIT greatest(p_limit, 0)
           FOR UPDATE OF b SKIP LOCKED) pick
   WHERE t.tenant_id = pick.tenant_id AND t.question_id = pick.question_id
  RETURNING t.tenant_id, t.conversation_id, t.question_id, t.attempts,
            t.attempts > r.max_attempts OR t.asked_at < now() - r.max_age
$$;
COMMENT ON FUNCTION parley.pick_bot_turns(text, int) IS
  'Servers (parley_app), across tenants: lease to p_worker up to p_limit bot turns whose lease ran out (their server died or lost the database) or that are named after another server holding no liveness lock (hold_server_lock: it died, so its lease need not run out), oldest first, only the oldest open turn of a conversation, one picker per turn (SKIP LOCKED), counting the run; named after p_worker only while it holds its own liveness lock (live_server_name), else left unnamed to its lease. give_up: the turn has had bot_turn_attempts runs or its question is older than bot_turn_max_age; give_up_bot_turn ends it, anything else is run again. Returns ids only; the server then works in that tenant''s transaction.';

CREATE OR REPLACE FUNCTION parley.give_up_bot_turn(p_question_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_conv parley.conversations;
  v_config jsonb;
  v_question text;
BEGIN
  SELECT c.* INTO v_conv FROM parley.bot_turns t
    JOIN parley.conversations c ON c.tenant_id = t.tenant_id AND c.id = t.conversation_id
   WHERE t.tenant_id = (SELECT parley.current_tenant_id()) AND t.question_id = p_question_id;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  -- The conversation first, as every writer of it (then the turn, as an answer's transaction does).
  v_conv := parley.lock_conversation(v_conv.id);
  IF NOT parley.end_bot_turn(p_question_id) THEN
    RETURN false;
  END IF;
  SELECT b.config INTO v_config FROM parley.chatbots b WHERE b.tenant_id = v_conv.tenant_id AND b.id = v_conv.chatbot_id;
  SELECT m.body INTO v_question FROM parley.messages m
   WHERE m.tenant_id = v_conv.tenant_id AND m.conversation_id = v_conv.id AND m.id = p_question_id;
  IF v_conv.status = 'bot' THEN
    PERFORM parley.post_system_text(v_conv.id, 'assistant_unavailable', parley.spoken_language(v_config, v_conv.locale),
                                    '{"offer_human": true}', 'bot:' || p_question_id);
  END IF;
  PERFORM parley.record_assistant_turn(v_conv.id, coalesce(v_question, ''), 'error', false, p_question_id);
  RETURN v_conv.status = 'bot';
END $$;
COMMENT ON FUNCTION parley.give_up_bot_turn(bigint) IS
  'End a bot turn of the current tenant that is not to be answered (pick_bot_turns said give_up): while the conversation is still the bot''s, the assistant_unavailable notice offering a person is said under the question''s key (bot:<question id>); logged in assistant_turns as an error. True when the notice was due; false when the conversation had left the bot (silent) or the turn had already ended.';

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
SELECT parley.secure_functions('parley_auth', '{parley_app}', 'parley.pick_bot_turns(text, int)');
