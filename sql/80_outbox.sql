-- The outbox: every side effect that leaves Parley (customer webhooks, alerts, channel posts).
--
-- Enqueue: an AFTER INSERT trigger on parley.events writes one parley.outbox row per
-- destination that subscribes to the event's kind, in the event's own transaction, so no code
-- path can change state without its deliveries being recorded (and a rolled-back change sends
-- nothing). When the tenant has no subscribed destination it costs one index probe.
-- Wake-up: the drainers LISTEN on `parley_events` (emit_event's one NOTIFY per transaction,
-- payload <tenant>:<event>:<conversation>) and `parley_outbox` (payload: tenant id, sent by
-- replays and deliveries written outside an event); NOTIFY is only a wake-up, they poll too.
-- Drain (parley_jobs only, see jobs/outbox.py):
--   1. lease_outbox_destinations(worker, n, seconds, busy) leases destinations, not rows
--      (FOR NO KEY UPDATE SKIP LOCKED on the destination), so a destination's deliveries are
--      sent by one worker at a time and an ordered destination keeps its order per ordering key
--      (the conversation: a retry or a refusal in one Telegram topic holds that topic only); a lease that
--      is not renewed (the worker died) expires and another worker takes over;
--   2. take_outbox_batch(destination, worker, n) returns up to n ready deliveries in id order,
--      as many as the destination's token buckets allow;
--   3. the worker sends them outside any transaction and records results as they come
--      (record_outbox_results, sql/80_outbox_results.sql): one parley.outbox_attempts row per attempt; each delivery moves on: delivered;
--      failed (a 4xx other than 429: not retried, shown); retry with exponential backoff and
--      jitter (or exactly retry_after) until its deadline (created + retry_window, ≥ 72 h),
--      then dead (the dead-letter queue, replayable).
-- A crash between send and record (what was in flight, answered in the last ~0.1 s, or a failure
-- waiting for its batch's first success) sends it again with the same delivery_key
-- (at-least-once; receivers deduplicate on webhook-id / Idempotency-Key).
-- Destination health: any success in a batch clears the destination's failing state (one refused
-- delivery is that delivery's failure); a retryable failure with no success in its batch holds the destination
-- until the earliest retry (a 429's retry_after exactly); a destination failing for
-- pause_after (or whose adapter says it is gone, e.g. a bot removed) is paused with its reason.

SELECT parley.apply_tenant_policies('parley.outbox_destinations');
SELECT parley.apply_tenant_policies('parley.outbox');
-- Append-only attempts: no role may change or remove one (partitions are dropped whole).
SELECT parley.apply_tenant_policies('parley.outbox_attempts', ARRAY['select', 'insert']);
SELECT parley.apply_tenant_policies('parley.outbox_rate_buckets');

GRANT SELECT ON parley.outbox_destinations, parley.outbox, parley.outbox_attempts TO parley_app, parley_jobs;
-- Enqueue happens inside whatever transaction writes an event (server or jobs).
GRANT INSERT ON parley.outbox TO parley_app, parley_jobs;
GRANT USAGE ON SEQUENCE parley.outbox_id_seq TO parley_app, parley_jobs;
GRANT UPDATE (status, attempts, next_attempt_at, last_status_code, last_error, finished_at, payload, parts_sent)
   ON parley.outbox TO parley_jobs;
GRANT UPDATE (status, finished_at) ON parley.outbox TO parley_app;
GRANT INSERT ON parley.outbox_attempts TO parley_jobs;
GRANT USAGE ON SEQUENCE parley.outbox_attempts_id_seq TO parley_jobs;
GRANT UPDATE (status, paused_reason, paused_at, failing_since, consecutive_failures, last_success_at,
              last_error, next_send_at, leased_by, leased_until, updated_at)
   ON parley.outbox_destinations TO parley_jobs;
GRANT SELECT, INSERT, UPDATE ON parley.outbox_rate_buckets TO parley_jobs;
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.outbox_rate_buckets TO parley_app;
-- The cross-tenant lease (owned by parley_auth, BYPASSRLS) reads and leases destinations.
GRANT SELECT, UPDATE (leased_by, leased_until) ON parley.outbox_destinations TO parley_auth;
GRANT SELECT ON parley.outbox TO parley_auth;

SELECT parley.ensure_monthly_partitions('parley.outbox', 3);
SELECT parley.ensure_monthly_partitions('parley.outbox_attempts', 3);

------------------------------------------------------------------------------------------
-- Enqueue

CREATE OR REPLACE FUNCTION parley.outbox_event_kinds() RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $$ SELECT ARRAY['conversation_started', 'message_added', 'human_requested', 'claimed', 'released', 'assigned',
                   'closed', 'reopened', 'lead_captured', 'note_added', 'codename_set', 'negative_feedback']::text[] $$;
COMMENT ON FUNCTION parley.outbox_event_kinds() IS
  'The kinds a destination may subscribe to: the domain event kinds (parley.events.kind) and negative_feedback (a thumbs-down or a rating of 1-2, sql/83_alerts.sql).';

CREATE OR REPLACE FUNCTION parley.enqueue_event_deliveries() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_chatbot uuid;
  v_channels boolean := true;
BEGIN
  -- The common case: nobody subscribes. One probe of the tenant's few destinations.
  IF NOT EXISTS (SELECT 1 FROM parley.outbox_destinations d
                  WHERE d.tenant_id = NEW.tenant_id AND d.status <> 'disabled' AND NEW.kind = ANY (d.event_kinds)) THEN
    RETURN NULL;
  END IF;
  IF NEW.conversation_id IS NOT NULL THEN
    SELECT c.chatbot_id INTO v_chatbot FROM parley.conversations c
     WHERE c.tenant_id = NEW.tenant_id AND c.id = NEW.conversation_id;
  END IF;
  -- A system text whose template says "not to channels" (sql/49_system_texts.sql) skips the agents' channels.
  IF NEW.kind = 'message_added' AND NEW.message_id IS NOT NULL THEN
    SELECT coalesce((m.meta->>'to_channels')::boolean, true) INTO v_channels FROM parley.messages m
     WHERE m.tenant_id = NEW.tenant_id AND m.conversation_id = NEW.conversation_id AND m.id = NEW.message_id
       AND m.author = 'system';
    v_channels := coalesce(v_channels, true);
  END IF;
  -- Rows only: the body ('{}' here) is built by the drainer when it first takes the delivery
  -- (parley.event_delivery_payload), so the chat transaction that writes the event (holding its
  -- conversations and the tenant's event lock) pays for an insert, not for JSON.
  INSERT INTO parley.outbox (tenant_id, destination_id, event_id, kind, conversation_id, payload, deadline)
  SELECT NEW.tenant_id, d.id, NEW.id, 'conversation.' || NEW.kind, NEW.conversation_id, '{}', now() + d.retry_window
    FROM parley.outbox_destinations d
   WHERE d.tenant_id = NEW.tenant_id AND d.status <> 'disabled' AND NEW.kind = ANY (d.event_kinds)
     AND (d.chatbot_id IS NULL OR d.chatbot_id = v_chatbot)
     AND (v_channels OR d.kind <> 'telegram');
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.enqueue_event_deliveries() IS
  'Trigger t50_enqueue_deliveries on parley.events: one outbox row per active or paused destination of the tenant subscribed to the event kind (and chatbot; a system text whose template is not for channels skips Telegram), in the event''s transaction, with an empty body that take_outbox_batch fills from the event (event_delivery_payload). No NOTIFY of its own: emit_event''s parley_events wakes the drainers.';

CREATE OR REPLACE FUNCTION parley.event_delivery_payloads(p_event_ids bigint[])
RETURNS TABLE (event_id bigint, payload jsonb)
LANGUAGE sql STABLE
AS $$
  SELECT e.id, jsonb_build_object(
           'type', 'conversation.' || e.kind,
           'timestamp', e.at,
           'data', jsonb_build_object(
             'event_id', e.id, 'conversation_id', e.conversation_id, 'chatbot_id', c.chatbot_id,
             'codename', c.codename, 'visitor_name', l.name,
             'actor', jsonb_build_object('kind', e.actor_kind, 'id', e.actor_id),
             'details', e.data,
             'actions', parley.channel_keyboard(e.kind, c.status),
             'message', (SELECT parley.message_json(m) FROM parley.messages m
                          WHERE m.tenant_id = e.tenant_id AND m.conversation_id = e.conversation_id
                            AND m.id = e.message_id)))
    FROM parley.events e
    LEFT JOIN parley.conversations c ON c.tenant_id = e.tenant_id AND c.id = e.conversation_id
    LEFT JOIN parley.leads l ON l.tenant_id = e.tenant_id AND l.conversation_id = e.conversation_id
   WHERE e.tenant_id = parley.current_tenant_id() AND e.id = ANY (p_event_ids)
$$;
COMMENT ON FUNCTION parley.event_delivery_payloads(bigint[]) IS
  'The delivery bodies of domain events of the current tenant, set-based (one statement for a drainer''s whole batch; Standard Webhooks shape: type conversation.<kind>, timestamp, data {event_id, conversation_id, chatbot_id, codename, visitor_name (the lead''s), actor, details, actions (after a change of state: what an agent may do now, sql/57_actions.sql channel_keyboard; else null), message}); no row for an event that is gone.';

CREATE OR REPLACE FUNCTION parley.event_delivery_payload(p_event_id bigint) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT coalesce((SELECT p.payload FROM parley.event_delivery_payloads(ARRAY[p_event_id]) p),
                  jsonb_build_object('type', 'conversation.event', 'data', jsonb_build_object('event_id', p_event_id)))
$$;
COMMENT ON FUNCTION parley.event_delivery_payload(bigint) IS
  'The delivery body of one domain event of the current tenant (event_delivery_payloads); a minimal body {type conversation.event, data {event_id}} when the event is gone.';

CREATE OR REPLACE FUNCTION parley.fill_delivery_payloads(p_destination_id uuid, p_ids bigint[]) RETURNS void
LANGUAGE sql VOLATILE
AS $$
  WITH todo AS (
    SELECT o.id, o.event_id FROM parley.outbox o
     WHERE o.tenant_id = parley.current_tenant_id() AND o.destination_id = p_destination_id
       AND o.status = 'pending' AND o.id = ANY (p_ids) AND o.event_id IS NOT NULL AND o.payload = '{}'
  ), built AS (
    SELECT b.event_id, b.payload FROM parley.event_delivery_payloads(ARRAY(SELECT t.event_id FROM todo t)) b
  )
  UPDATE parley.outbox o SET payload = coalesce(b.payload, parley.event_delivery_payload(t.event_id))
    FROM todo t LEFT JOIN built b ON b.event_id = t.event_id
   WHERE o.tenant_id = parley.current_tenant_id() AND o.destination_id = p_destination_id
     AND o.status = 'pending' AND o.id = t.id
$$;
COMMENT ON FUNCTION parley.fill_delivery_payloads(uuid, bigint[]) IS
  'Drainers, on first take: build the bodies of the pending event deliveries p_ids of a destination of the current tenant that have none yet (see enqueue_event_deliveries), in one statement.';

SELECT parley.ensure_trigger('parley.events', 't50_enqueue_deliveries', 'AFTER INSERT',
  $$FOR EACH ROW EXECUTE FUNCTION parley.enqueue_event_deliveries()$$);

CREATE OR REPLACE FUNCTION parley.enqueue_delivery(p_destination_id uuid, p_kind text, p_payload jsonb,
                                                  p_conversation_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_id bigint;
BEGIN
  INSERT INTO parley.outbox (tenant_id, destination_id, kind, conversation_id, payload, deadline)
  SELECT d.tenant_id, d.id, p_kind, p_conversation_id, p_payload, now() + d.retry_window
    FROM parley.outbox_destinations d
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_destination_id AND d.status <> 'disabled'
  RETURNING id INTO v_id;
  IF v_id IS NULL THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such destination, or it is disabled.');
  END IF;
  PERFORM pg_notify('parley_outbox', parley.current_tenant_id()::text);
  RETURN v_id;
END $$;
COMMENT ON FUNCTION parley.enqueue_delivery(uuid, text, jsonb, uuid) IS
  'Write one delivery that no domain event causes (test event, alert, owner notice) to a destination of the current tenant, and NOTIFY parley_outbox (payload: tenant id). Call it at most once per transaction that already notifies.';

-- A tenant's one destination of a kind Parley itself sends to (the owners' notices, Stripe), made on
-- first use. Two first uses at once (a referral credit and a usage report; two notices) would each
-- see none and make one: the second waits on the lock, then finds the first's.
CREATE OR REPLACE FUNCTION parley.system_destination(p_tenant_id uuid, p_kind text, p_target text, p_name text,
                                                    p_ordered boolean)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_dest uuid;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(format('parley.system_destination %s %s %s', p_tenant_id, p_kind,
                                                        p_target), 0));
  SELECT d.id INTO v_dest FROM parley.outbox_destinations d
   WHERE d.tenant_id = p_tenant_id AND d.kind = p_kind AND d.target = p_target AND d.chatbot_id IS NULL
   ORDER BY d.created_at LIMIT 1;
  IF v_dest IS NULL THEN
    INSERT INTO parley.outbox_destinations (tenant_id, kind, name, target, ordered)
    VALUES (p_tenant_id, p_kind, p_name, p_target, p_ordered)
    RETURNING id INTO v_dest;
  END IF;
  RETURN v_dest;
END $$;
COMMENT ON FUNCTION parley.system_destination(uuid, text, text, text, boolean) IS
  'The tenant''s one outbox destination of kind p_kind and target p_target for no chatbot, made on first use (named p_name, ordered or not); one even when two transactions ask first at once (an advisory lock per tenant, kind and target). Its id.';

------------------------------------------------------------------------------------------
-- Drain (parley_jobs)

DROP FUNCTION IF EXISTS parley.lease_outbox_destinations(text, int, int);
CREATE OR REPLACE FUNCTION parley.lease_outbox_destinations(p_worker text, p_limit int, p_lease_seconds int,
                                                            p_busy uuid[] DEFAULT '{}')
RETURNS TABLE (tenant_id uuid, destination_id uuid, kind text)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
  UPDATE parley.outbox_destinations d
     SET leased_by = p_worker, leased_until = now() + make_interval(secs => p_lease_seconds)
    FROM (SELECT c.tenant_id, c.id FROM parley.outbox_destinations c
           WHERE c.status = 'active' AND c.next_send_at <= now()
             AND c.id <> ALL (coalesce(p_busy, '{}'))  -- never a second task on one destination, even past its lease
             AND (c.leased_until IS NULL OR c.leased_until < now() OR c.leased_by = p_worker)
             AND EXISTS (SELECT 1 FROM parley.outbox o
                          WHERE o.tenant_id = c.tenant_id AND o.destination_id = c.id AND o.status = 'pending'
                            AND o.next_attempt_at <= now())
           ORDER BY c.next_send_at
           LIMIT p_limit
           FOR NO KEY UPDATE OF c SKIP LOCKED) pick
   WHERE d.tenant_id = pick.tenant_id AND d.id = pick.id
  RETURNING d.tenant_id, d.id, d.kind
$$;
COMMENT ON FUNCTION parley.lease_outbox_destinations(text, int, int, uuid[]) IS
  'Drainers: lease up to p_limit active destinations of any tenant that have a pending delivery due now and may send now (not held by backoff, retry_after or an empty bucket), for p_lease_seconds; skips destinations leased by another live worker, and those in p_busy (the ones p_worker is working on, even past their lease: their batch renews it). A lease of p_worker itself on a destination not in p_busy is taken again: the worker lost track of it (the database restarted under its release or under this very call) and need not wait for it to run out. Worker names are one per drainer. Returns ids only; the worker then works in that tenant''s transaction.';

CREATE OR REPLACE FUNCTION parley.release_outbox_destination(p_destination_id uuid, p_worker text)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.outbox_destinations d SET leased_by = NULL, leased_until = NULL
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_destination_id AND d.leased_by = p_worker
$$;
COMMENT ON FUNCTION parley.release_outbox_destination(uuid, text) IS
  'Drainers: give back a destination this worker leased (no-op when the lease was lost).';

CREATE OR REPLACE FUNCTION parley.take_rate_tokens(p_keys text[], p_want int, OUT granted int, OUT wait_s numeric)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
BEGIN
  granted := p_want;
  wait_s := 0;
  IF cardinality(p_keys) = 0 OR p_want <= 0 THEN
    RETURN;
  END IF;
  UPDATE parley.outbox_rate_buckets b
     SET tokens = least(b.capacity, b.tokens + b.per_second * extract(epoch FROM now() - b.refilled_at)),
         refilled_at = now()
   WHERE b.tenant_id = v_tenant AND b.key = ANY (p_keys);
  SELECT least(p_want, min(floor(b.tokens)))::int, max(greatest(0, 1 - b.tokens) / b.per_second)
    INTO granted, wait_s
    FROM parley.outbox_rate_buckets b WHERE b.tenant_id = v_tenant AND b.key = ANY (p_keys);
  granted := greatest(coalesce(granted, p_want), 0);
  IF granted > 0 THEN
    UPDATE parley.outbox_rate_buckets b SET tokens = b.tokens - granted
     WHERE b.tenant_id = v_tenant AND b.key = ANY (p_keys);
  END IF;
END $$;
COMMENT ON FUNCTION parley.take_rate_tokens(text[], int) IS
  'Token buckets: refill the current tenant''s buckets p_keys, take as many tokens (≤ p_want) as every one of them holds, and return that count with the seconds until the emptiest holds one again. Unknown keys limit nothing.';

-- The drainers' read of the destination they work on: locked, so its lease, health and pausing
-- are written by one transaction at a time.
CREATE OR REPLACE FUNCTION parley.lock_destination(p_destination_id uuid) RETURNS parley.outbox_destinations
LANGUAGE sql VOLATILE
AS $$
  SELECT * FROM parley.outbox_destinations d
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_destination_id
     FOR NO KEY UPDATE
$$;
COMMENT ON FUNCTION parley.lock_destination(uuid) IS
  'A destination of the current tenant, locked (FOR NO KEY UPDATE) until the transaction ends; all NULL when there is none. Drainers (renew_destination_lease, record_outbox_results) and on_destination_paused read it this way.';

CREATE OR REPLACE FUNCTION parley.renew_destination_lease(p_destination_id uuid, p_worker text, p_lease_seconds int)
RETURNS parley.outbox_destinations
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_dest parley.outbox_destinations := parley.lock_destination(p_destination_id);
BEGIN
  IF v_dest.id IS NULL OR v_dest.leased_by IS DISTINCT FROM p_worker OR v_dest.leased_until < now()
     OR v_dest.status <> 'active' OR v_dest.next_send_at > now() THEN
    RETURN NULL;
  END IF;
  UPDATE parley.outbox_destinations d SET leased_until = now() + make_interval(secs => p_lease_seconds)
   WHERE d.tenant_id = v_dest.tenant_id AND d.id = p_destination_id;
  RETURN v_dest;
END $$;
COMMENT ON FUNCTION parley.renew_destination_lease(uuid, text, int) IS
  'Drainers, before taking a batch: lock a destination of the current tenant and renew this worker''s lease on it for p_lease_seconds; NULL (take nothing) when the lease is lost or the destination is paused or held.';

CREATE OR REPLACE FUNCTION parley.hold_destination_until_due(p_destination_id uuid, p_ordered boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  IF p_ordered THEN
    -- Per ordering key: what queues behind a conversation's head waiting for a retry waits as long
    -- as the head (so the lease's "something ready" probe skips it). The destination itself is not
    -- held: another conversation's new delivery is ready at once.
    UPDATE parley.outbox o SET next_attempt_at = h.next_attempt_at
      FROM (SELECT DISTINCT ON (p.conversation_id) p.conversation_id, p.id, p.next_attempt_at FROM parley.outbox p
             WHERE p.tenant_id = parley.current_tenant_id() AND p.destination_id = p_destination_id
               AND p.status = 'pending'
             ORDER BY p.conversation_id, p.id) h
     WHERE o.tenant_id = parley.current_tenant_id() AND o.destination_id = p_destination_id AND o.status = 'pending'
       AND o.conversation_id IS NOT DISTINCT FROM h.conversation_id AND o.id > h.id
       AND h.next_attempt_at > now() AND o.next_attempt_at < h.next_attempt_at;
    RETURN;
  END IF;
  UPDATE parley.outbox_destinations d
     SET next_send_at = coalesce((SELECT min(o.next_attempt_at) FROM parley.outbox o
                                   WHERE o.tenant_id = d.tenant_id AND o.destination_id = d.id AND o.status = 'pending'),
                                 d.next_send_at)
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_destination_id;
END $$;
COMMENT ON FUNCTION parley.hold_destination_until_due(uuid, boolean) IS
  'Drainers, when nothing pending is ready: an unordered destination of the current tenant is held until its first delivery is due, so no drainer leases it in vain meanwhile; an ordered one is not held (a conversation waiting for a retry holds only itself, outbox_ready_ids), but the deliveries queued behind each waiting head get the head''s time, so lease_outbox_destinations does not see them as ready.';

CREATE OR REPLACE FUNCTION parley.outbox_ready_ids(p_destination_id uuid, p_ordered boolean, p_limit int)
RETURNS bigint[]
LANGUAGE sql STABLE
AS $$
  SELECT CASE WHEN p_ordered THEN
    -- Ordered: per ordering key (the conversation: one Telegram topic), the run before its first
    -- delivery waiting for a retry; one conversation waiting holds only itself, not the destination.
    (SELECT array_agg(r.id ORDER BY r.id) FROM (
       SELECT x.id FROM (
         SELECT o.id, bool_or(o.next_attempt_at > now()) OVER (PARTITION BY o.conversation_id ORDER BY o.id) AS blocked
           FROM parley.outbox o
          WHERE o.tenant_id = parley.current_tenant_id() AND o.destination_id = p_destination_id
            AND o.status = 'pending') x
        WHERE NOT x.blocked
        ORDER BY x.id LIMIT p_limit) r)
  ELSE
    (SELECT array_agg(r.id ORDER BY r.id) FROM (
       SELECT o.id FROM parley.outbox o
        WHERE o.tenant_id = parley.current_tenant_id() AND o.destination_id = p_destination_id
          AND o.status = 'pending' AND o.next_attempt_at <= now()
        ORDER BY o.id LIMIT p_limit) r)
  END
$$;
COMMENT ON FUNCTION parley.outbox_ready_ids(uuid, boolean, int) IS
  'Drainers: up to p_limit pending deliveries of a destination of the current tenant that may go now, in id order. Unordered: every one due. Ordered: per ordering key (conversation_id; deliveries without one share a key), the run before the key''s first delivery waiting for a retry, so a retry or a failure holds its own conversation (Telegram topic) only.';

-- The two ends every take shares (take_outbox_batch here, take_channel_batch in sql/84_telegram.sql).
CREATE OR REPLACE FUNCTION parley.lease_ready_ids(p_destination_id uuid, p_worker text, p_limit int,
                                                 p_lease_seconds int)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_dest parley.outbox_destinations;
  v_ready bigint[];
BEGIN
  v_dest := parley.renew_destination_lease(p_destination_id, p_worker, p_lease_seconds);
  IF v_dest.id IS NULL THEN
    RETURN NULL;
  END IF;
  -- A destination that got nothing through its last batch (failing_since: down, or answering 429)
  -- is probed with one delivery until one gets through: after its hold a batch of every due retry
  -- would meet the same answer all at once (bench/faults.py: a 429 with Retry-After: 1 drew a
  -- whole batch of 429s a second).
  v_ready := parley.outbox_ready_ids(p_destination_id, v_dest.ordered,
                                     CASE WHEN v_dest.failing_since IS NULL THEN p_limit ELSE least(p_limit, 1) END);
  IF coalesce(cardinality(v_ready), 0) = 0 THEN
    -- Everything waits for a retry: hold the destination until the first one is due, so no
    -- drainer leases it in vain meanwhile (an ordered one waits for its head).
    PERFORM parley.hold_destination_until_due(p_destination_id, v_dest.ordered);
    RETURN NULL;
  END IF;
  RETURN v_ready;
END $$;
COMMENT ON FUNCTION parley.lease_ready_ids(uuid, text, int, int) IS
  'Drainers, the start of a take: renew this worker''s lease on a destination of the current tenant (renew_destination_lease) and return up to p_limit ready pending deliveries in id order (outbox_ready_ids; per conversation on an ordered destination), only one while the destination is failing (a probe: its last batch got nothing through). NULL when the lease is lost, the destination is paused or held, or nothing is ready (then it is held until the first is due, hold_destination_until_due).';

CREATE OR REPLACE FUNCTION parley.take_destination_tokens(p_destination_id uuid, p_want int) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tokens record;
BEGIN
  v_tokens := parley.take_rate_tokens((SELECT d.rate_keys FROM parley.outbox_destinations d
                                        WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_destination_id),
                                      p_want);
  IF v_tokens.granted = 0 THEN
    UPDATE parley.outbox_destinations d SET next_send_at = now() + make_interval(secs => v_tokens.wait_s::float8)
     WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_destination_id;
  END IF;
  RETURN v_tokens.granted;
END $$;
COMMENT ON FUNCTION parley.take_destination_tokens(uuid, int) IS
  'Drainers, the end of a take: how many of p_want sends (deliveries or posts) a destination of the current tenant may make now, taken from its rate buckets (take_rate_tokens); none: the destination is held until its emptiest bucket refills.';

CREATE OR REPLACE FUNCTION parley.take_outbox_batch(p_destination_id uuid, p_worker text, p_limit int,
                                                   p_lease_seconds int DEFAULT 30)
RETURNS TABLE (id bigint, created_at timestamptz, delivery_key uuid, kind text, payload jsonb, attempts int,
               event_id bigint, conversation_id uuid)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_ready bigint[] := parley.lease_ready_ids(p_destination_id, p_worker, p_limit, p_lease_seconds);
BEGIN
  IF v_ready IS NULL THEN
    RETURN;
  END IF;
  v_ready := v_ready[1:parley.take_destination_tokens(p_destination_id, cardinality(v_ready))];
  IF cardinality(v_ready) = 0 THEN
    RETURN;
  END IF;
  -- Bodies of event deliveries not built yet (see enqueue_event_deliveries) are built here and
  -- returned, not written: record_outbox_results keeps the body the drainer sent with the attempt's
  -- row update (one row version per delivery, not two; a drainer that dies first leaves '{}', and
  -- the next take builds it again).
  RETURN QUERY
    WITH todo AS (
      SELECT o.event_id FROM parley.outbox o
       WHERE o.tenant_id = v_tenant AND o.destination_id = p_destination_id AND o.status = 'pending'
         AND o.id = ANY (v_ready) AND o.event_id IS NOT NULL AND o.payload = '{}'
    ), built AS (
      SELECT b.event_id, b.payload FROM parley.event_delivery_payloads(ARRAY(SELECT t.event_id FROM todo t)) b
    )
    SELECT o.id, o.created_at, o.delivery_key, o.kind,
           CASE WHEN o.payload = '{}' AND o.event_id IS NOT NULL
                THEN coalesce(b.payload, parley.event_delivery_payload(o.event_id)) ELSE o.payload END,
           o.attempts, o.event_id, o.conversation_id
      FROM parley.outbox o
      LEFT JOIN built b ON b.event_id = o.event_id AND o.payload = '{}'
     WHERE o.tenant_id = v_tenant AND o.destination_id = p_destination_id AND o.status = 'pending'
       AND o.id = ANY (v_ready)
     ORDER BY o.id;
END $$;
COMMENT ON FUNCTION parley.take_outbox_batch(uuid, text, int, int) IS
  'Drainers: up to p_limit ready pending deliveries of a destination this worker leases, in id order, renewing the lease for p_lease_seconds (an ordered destination: per conversation, the run before its first delivery waiting for a retry, outbox_ready_ids), cut to what its token buckets allow (none left: the destination is held until one refills), the bodies of event deliveries not built yet built (event_delivery_payloads) but not written: record_outbox_results keeps the body sent. Empty when the lease is lost or the destination is paused or held.';

-- Its monthly partitions are made and dropped with the others' (parley.maintain_partitions).
DROP FUNCTION IF EXISTS parley.maintain_outbox_partitions(interval);

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_jobs}',
  'parley.fill_delivery_payloads(uuid, bigint[])', 'parley.release_outbox_destination(uuid, text)',
  'parley.take_rate_tokens(text[], int)', 'parley.lock_destination(uuid)',
  'parley.renew_destination_lease(uuid, text, int)',
  'parley.hold_destination_until_due(uuid, boolean)', 'parley.outbox_ready_ids(uuid, boolean, int)',
  'parley.lease_ready_ids(uuid, text, int, int)', 'parley.take_destination_tokens(uuid, int)',
  'parley.take_outbox_batch(uuid, text, int, int)');
SELECT parley.secure_functions('parley_auth', '{parley_jobs}', 'parley.lease_outbox_destinations(text, int, int, uuid[])');
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs, parley_auth}',
  'parley.system_destination(uuid, text, text, text, boolean)');
