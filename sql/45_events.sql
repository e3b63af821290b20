-- Events and NOTIFY, the contract every listener builds on (the relay, the agent socket, SSE):
-- every state change and message writes one row to parley.events through
-- parley.emit_event; the first event of a transaction also sends the one NOTIFY of that
-- transaction on channel `parley_events` with payload `<tenant_id>:<event_id>:<conversation_id>`
-- (ids only; conversation id empty for tenant-wide events). Listeners treat it as a wake-up and
-- read parley.events_after(last_seen_id): a transaction may write several events.
--
-- Ordering guarantees:
--   * messages: ids of one conversation increase in commit order, because every writer holds
--     the conversation row lock (SELECT ... FOR UPDATE in parley.lock_conversation) from before
--     nextval() until commit. Resume with visible_messages(conversation, last_seen_id) is exact.
--   * events: ids of one tenant are not assigned in commit order (writers run concurrently),
--     but a reader never sees a gap that could still be filled. Writers take a SHARED
--     per-tenant advisory lock (7261003) in emit_event before nextval() and hold it to commit;
--     writers never wait for each other on it. events_after takes the same lock EXCLUSIVE
--     first: that waits until every writer already holding it has committed or rolled back.
--     Holding it, it reads the horizon (the last id the events sequence handed out) and lets
--     go at once: every id up to the horizon belongs to a transaction that has ended, and any
--     later writer gets a larger id. It returns only events up to the horizon, so every event
--     with an id up to the largest one returned is already visible, and resuming after the
--     last seen id (relay cursor, Last-Event-ID) never skips. Writers of the tenant wait only
--     while a reader waits for the writers ahead of them (a barrier, not a queue). A writer
--     that keeps its transaction open makes the reader give up after 250 ms (55P03) and
--     retry, so the tenant's other writers are never stalled for longer than that.
--   Lock order is always: conversation row → open-conversation limit lock → usage rows → tenant
--   event lock, and nothing waits for a lock after its first event (a writer that did could
--   stall behind a queued reader that waits for it, until the deadlock detector steps in).
--   Call event-writing functions for at most one conversation per transaction; the one
--   exception, post_visitor_messages, locks all its conversations (in id order) before
--   anything else and stores all its messages before it writes the first event.

SELECT parley.apply_tenant_policies('parley.events');

GRANT SELECT, INSERT ON parley.events TO parley_app;
GRANT USAGE ON SEQUENCE parley.events_id_seq TO parley_app, parley_jobs;
-- events_after reads the events sequence's last value (its horizon).
GRANT SELECT ON SEQUENCE parley.events_id_seq TO parley_app, parley_jobs;
GRANT SELECT, INSERT, DELETE ON parley.events TO parley_jobs;

CREATE OR REPLACE FUNCTION parley.emit_event(p_kind text, p_conversation_id uuid, p_message_id bigint DEFAULT NULL,
                                             p_data jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_id bigint;
BEGIN
  -- Gap-safe reading (see the header): announce this writer before nextval(); shared, so
  -- writers of one tenant do not wait for each other, only for a reader's short barrier.
  PERFORM pg_advisory_xact_lock_shared(7261003, hashtext(v_tenant::text));
  INSERT INTO parley.events (tenant_id, kind, conversation_id, message_id, actor_kind, actor_id, data)
  VALUES (v_tenant, p_kind, p_conversation_id, p_message_id, parley.current_actor_kind(),
          parley.current_actor_id(), coalesce(p_data, '{}'))
  RETURNING id INTO v_id;
  -- At most one NOTIFY per transaction: the first event names itself, later ones ride along.
  IF coalesce(current_setting('parley.notified', true), '') = '' THEN
    PERFORM pg_notify('parley_events', format('%s:%s:%s', v_tenant, v_id, coalesce(p_conversation_id::text, '')));
    PERFORM set_config('parley.notified', '1', true);
  END IF;
  RETURN v_id;
END $$;
COMMENT ON FUNCTION parley.emit_event(text, uuid, bigint, jsonb) IS
  'Append a domain event for the current tenant and, once per transaction, NOTIFY parley_events with payload <tenant_id>:<event_id>:<conversation_id> (ids only). Holds the tenant''s event lock (7261003) SHARED to commit, so events_after can wait for writers in flight and never skip an id.';
CREATE OR REPLACE FUNCTION parley.visitor_frame(p_kind text, p_data jsonb, p_message parley.messages)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT CASE
           WHEN p_kind = 'message_added' THEN
             CASE WHEN p_message.id IS NOT NULL AND p_message.author <> 'note'
                  THEN jsonb_build_object('type', 'message', 'message', parley.message_json(p_message, true)) END
           -- nobody online: the widget says so and offers the lead form (sql/47_presence.sql)
           WHEN p_kind = 'human_requested' THEN
             jsonb_build_object('type', 'status', 'status', 'waiting_human')
             || CASE WHEN p_data->'members_online' = '0'::jsonb THEN '{"available": false}'::jsonb ELSE '{}'::jsonb END
           WHEN p_kind = 'reopened' THEN
             jsonb_build_object('type', 'status', 'status', coalesce(nullif(p_data->>'status', ''), 'bot'))
           ELSE
             (SELECT jsonb_build_object('type', 'status', 'status', s.status)
                FROM (VALUES ('human_requested', 'waiting_human'), ('claimed', 'human'), ('assigned', 'human'),
                             ('released', 'bot'), ('closed', 'closed')) s(kind, status)
               WHERE s.kind = p_kind)
         END
$$;
COMMENT ON FUNCTION parley.visitor_frame(text, jsonb, parley.messages) IS
  'What the visitor of an event''s conversation is sent for it (docs/protocol.md), or NULL for nothing: {"type":"message","message":message_json(m, true)} for message_added (never for a note), {"type":"status","status":...} for the status changes a visitor sees (the status the event brought, not the current one; a handoff while no member was online adds "available": false). The one place that decides what a visitor sees of an event; events_after returns it as its visitor column.';

-- The result grew the visitor column: the old shape is dropped once, then replaced in place.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_proc WHERE oid = to_regprocedure('parley.events_after(bigint, int)')
              AND NOT 'visitor' = ANY (proargnames)) THEN
    DROP FUNCTION parley.events_after(bigint, int);
  END IF;
END $$;

CREATE OR REPLACE FUNCTION parley.events_after(p_after_id bigint, p_limit int DEFAULT 100)
RETURNS TABLE (id bigint, at timestamptz, kind text, conversation_id uuid, message_id bigint,
               actor_kind text, actor_id text, data jsonb, message jsonb, conversation jsonb, visitor jsonb)
LANGUAGE plpgsql VOLATILE
-- A custom plan knows the LIMIT and always looks cheaper than the generic one, so the read
-- was planned afresh on every call (0.8 ms, more than running it); the generic plan is the
-- same shape (the partitions are pruned at run time either way). And, as in post_message, a
-- plan cached while the month's partitions were small must not be a sequential scan.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
  -- Plain variables, so that "e.id > v_after" bounds the index scan (see visible_messages).
  v_after bigint := coalesce(p_after_id, 0);
  v_limit int := least(greatest(coalesce(p_limit, 100), 1), 1000);
  v_key int := hashtext(parley.current_tenant_id()::text);
  v_high bigint;
BEGIN
  PERFORM parley.require_staff();
  -- The barrier (see the header): wait for the tenant's writers in flight, note the horizon
  -- (the last event id handed out, to anyone), let writers go again. While it waits, new
  -- writers queue behind it; the lock timeout bounds that stall when a writer keeps its
  -- transaction open (55P03: the caller retries later). The lock is session-level so that it
  -- ends right after the horizon is read, not after the read below; the handler makes sure
  -- no error or cancel can leave a pooled session holding it.
  PERFORM set_config('lock_timeout', '250ms', true);
  BEGIN
    PERFORM pg_advisory_lock(7261003, v_key);
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END INTO v_high FROM parley.events_id_seq s;
    PERFORM pg_advisory_unlock(7261003, v_key);
  EXCEPTION WHEN query_canceled OR others THEN
    IF EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.mode = 'ExclusiveLock'
                  AND l.classid = 7261003 AND l.objid = v_key::oid AND l.objsubid = 2) THEN
      PERFORM pg_advisory_unlock(7261003, v_key);
    END IF;
    RAISE;
  END;
  -- VOLATILE: this query takes its snapshot now, after every writer holding an id up to
  -- v_high has ended; ids above it may still be in flight and wait for the next read.
  RETURN QUERY
    SELECT e.id, e.at, e.kind, e.conversation_id, e.message_id, e.actor_kind, e.actor_id, e.data,
           -- A message's event is written in its transaction (at = created_at = now()); the
           -- created_at range only lets each lookup visit one partition. The conversation_id
           -- makes it one probe of (tenant_id, conversation_id, id) whatever the statistics
           -- say (without them the planner skip-scanned that index once per conversation).
           CASE WHEN (em.m).id IS NOT NULL THEN parley.message_json(em.m) END,
           (SELECT parley.conversation_json(c) FROM parley.conversations c
             WHERE c.tenant_id = e.tenant_id AND c.id = e.conversation_id),
           parley.visitor_frame(e.kind, e.data, em.m)
      FROM parley.events e
      -- The event's message, looked up once for both audiences (NULL for other events).
      CROSS JOIN LATERAL (SELECT (SELECT m FROM parley.messages m
                                   WHERE m.tenant_id = e.tenant_id AND m.conversation_id = e.conversation_id
                                     AND m.id = e.message_id
                                     AND m.created_at BETWEEN e.at - interval '1 day' AND e.at + interval '1 day')
                          AS m) em
     WHERE e.tenant_id = parley.current_tenant_id() AND e.id > v_after AND e.id <= v_high
     ORDER BY e.id
     LIMIT v_limit;
END $$;
COMMENT ON FUNCTION parley.events_after(bigint, int) IS
  'The current tenant''s events with id > p_after_id, oldest first (≤ 1000), for the relay, the agent socket and SSE. message = the message (staff shape, notes included) for message_added/note_added; conversation = the conversation''s CURRENT summary; visitor = parley.visitor_frame: what the conversation''s visitor is sent for this event (NULL: nothing; never a note), so no caller decides what a visitor may see. It first takes the tenant''s event lock (7261003) EXCLUSIVE, waiting for writers in flight, reads the horizon (the events sequence''s last value) and releases the lock; it returns events up to the horizon only, so no event with a smaller id than those returned can appear later: resuming after the last seen id never skips (events above the horizon come with the next read). Waits at most 250 ms (sets lock_timeout for the transaction), then raises 55P03 lock_not_available: retry. The lock is session-level for that moment only; an error or cancel while holding it releases it. Members and the service actor only (403 for visitors).';
-- The jobs process writes events (idle sweep).
GRANT EXECUTE ON FUNCTION parley.emit_event(text, uuid, bigint, jsonb) TO parley_jobs;
