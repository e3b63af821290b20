-- The outbox's results: what a drainer's attempts did (record_outbox_results), the retry backoff,
-- pausing a destination and dead-lettering what no drainer got to before its deadline. The queue
-- itself (enqueue, leases, takes) and the rules these follow are described in sql/80_outbox.sql.

CREATE OR REPLACE FUNCTION parley.outbox_backoff(p_attempt int) RETURNS interval
LANGUAGE sql VOLATILE
AS $$
  SELECT make_interval(secs => least(5 * power(2, least(greatest(p_attempt, 1) - 1, 20)), 6 * 3600)
                               * (0.75 + random() * 0.5))
$$;
COMMENT ON FUNCTION parley.outbox_backoff(int) IS
  'Delay before retry number p_attempt + 1: 5 s doubling per attempt, capped at 6 h, with ±25 % jitter (about 20 attempts in the 72 h window).';

DROP FUNCTION IF EXISTS parley.record_outbox_results(uuid, text, jsonb);
CREATE OR REPLACE FUNCTION parley.record_outbox_results(p_destination_id uuid, p_worker text, p_results jsonb,
                                                       p_batch_delivered int DEFAULT 0)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_dest parley.outbox_destinations;
  v_ok int;
  v_bad int;
  v_retry int;
  v_retry_after numeric;
  v_earliest timestamptz;
  v_pause text;
  v_error text;
  v_dead int;
BEGIN
  v_dest := parley.lock_destination(p_destination_id);
  IF v_dest.id IS NULL THEN
    RETURN jsonb_build_object('recorded', 0);
  END IF;
  WITH res AS (
    SELECT * FROM jsonb_to_recordset(p_results) AS x(id bigint, created_at timestamptz, outcome text,
             status_code int, latency_ms int, error text, request jsonb, response text, retry_after numeric,
             parts_sent int, body text)
     WHERE x.outcome IN ('delivered', 'retry', 'failed')
  ), moved AS (
    UPDATE parley.outbox o
       SET attempts = o.attempts + 1,
           status = CASE WHEN r.outcome = 'delivered' THEN 'delivered'
                         WHEN r.outcome = 'failed' THEN 'failed'
                         WHEN r.retry_after IS NULL AND now() >= o.deadline THEN 'dead'
                         ELSE 'pending' END,
           next_attempt_at = CASE WHEN r.outcome <> 'retry' THEN o.next_attempt_at
                                  WHEN r.retry_after IS NOT NULL THEN now() + make_interval(secs => r.retry_after::float8)
                                  ELSE least(o.deadline, now() + parley.outbox_backoff(o.attempts + 1)) END,
           last_status_code = r.status_code,
           last_error = left(r.error, 1000),
           parts_sent = greatest(o.parts_sent, coalesce(r.parts_sent, 0)),
           -- A body built on take and not kept yet: the one this attempt sent.
           payload = CASE WHEN o.payload = '{}' AND r.body IS NOT NULL THEN r.body::jsonb ELSE o.payload END,
           finished_at = CASE WHEN r.outcome <> 'retry' OR (r.retry_after IS NULL AND now() >= o.deadline)
                              THEN now() END
      FROM res r
     WHERE o.tenant_id = v_tenant AND o.destination_id = p_destination_id AND o.id = r.id
       AND o.created_at = r.created_at AND o.status = 'pending'
    RETURNING o.id, o.attempts, o.status, o.next_attempt_at, r.outcome, r.status_code, r.latency_ms, r.error,
              r.request, r.response, r.retry_after
  ), logged AS (
    INSERT INTO parley.outbox_attempts (tenant_id, delivery_id, destination_id, attempt, outcome, status_code,
                                        latency_ms, error, request, response, worker)
    SELECT v_tenant, m.id, p_destination_id, m.attempts, m.outcome, m.status_code, m.latency_ms,
           left(m.error, 1000), m.request, left(m.response, 2000), left(p_worker, 200)
      FROM moved m
    RETURNING 1
  )
  SELECT count(*) FILTER (WHERE m.outcome = 'delivered'),
         count(*) FILTER (WHERE m.outcome <> 'delivered'),
         count(*) FILTER (WHERE m.outcome = 'retry'),
         max(m.retry_after),
         min(m.next_attempt_at) FILTER (WHERE m.outcome = 'retry' AND m.status = 'pending'),
         count(*) FILTER (WHERE m.status = 'dead'),
         (array_agg(coalesce(m.status_code::text || ' ', '') || coalesce(m.error, '') ORDER BY m.id DESC)
            FILTER (WHERE m.outcome <> 'delivered'))[1]
    INTO v_ok, v_bad, v_retry, v_retry_after, v_earliest, v_dead, v_error
    FROM moved m;
  v_pause := (SELECT max(x.pause_reason) FROM jsonb_to_recordset(p_results) AS x(pause_reason text));

  UPDATE parley.outbox_destinations d
     -- One delivery refused (a 4xx in one topic) while others get through is that delivery's
     -- failure, not the destination's: any success of the batch (in this call or, p_batch_delivered,
     -- an earlier one of the same batch) clears the destination's failing state.
     SET consecutive_failures = CASE WHEN v_ok > 0 AND p_batch_delivered = 0 THEN v_bad
                                     ELSE d.consecutive_failures + v_bad END,
         failing_since = CASE WHEN v_ok + p_batch_delivered > 0 THEN NULL
                              WHEN v_bad > 0 THEN coalesce(d.failing_since, now()) ELSE d.failing_since END,
         last_success_at = CASE WHEN v_ok > 0 THEN now() ELSE d.last_success_at END,
         last_error = CASE WHEN v_bad > 0 THEN left(v_error, 1000) ELSE d.last_error END,
         -- Held: exactly until retry_after; else, when nothing in the batch got through, until
         -- the earliest retry (a circuit breaker: a down endpoint is not hammered by new events).
         next_send_at = CASE WHEN v_retry_after IS NOT NULL
                               THEN greatest(d.next_send_at, now() + make_interval(secs => v_retry_after::float8))
                             WHEN v_retry > 0 AND v_ok + p_batch_delivered = 0 AND v_earliest IS NOT NULL
                               THEN greatest(d.next_send_at, v_earliest)
                             ELSE d.next_send_at END,
         updated_at = now()
   WHERE d.tenant_id = v_tenant AND d.id = p_destination_id
  RETURNING * INTO v_dest;

  IF v_pause IS NOT NULL OR (v_dest.status = 'active' AND v_dest.failing_since <= now() - v_dest.pause_after) THEN
    PERFORM parley.pause_destination(p_destination_id,
      coalesce(v_pause, format('Failing since %s: %s', to_char(v_dest.failing_since, 'YYYY-MM-DD HH24:MI TZ'),
                               coalesce(v_dest.last_error, 'no answer'))));
  END IF;
  RETURN jsonb_build_object('delivered', v_ok, 'failed', v_bad - v_retry, 'retry', v_retry, 'dead', v_dead);
END $$;
COMMENT ON FUNCTION parley.record_outbox_results(uuid, text, jsonb, int) IS
  'Drainers: record attempts of one batch as they come, in one call or several (JSON array of {id, created_at, outcome delivered|retry|failed, status_code, latency_ms, error, request, response, retry_after, pause_reason, parts_sent (of a split post, delivered so far: a retry sends the rest), body (the JSON text sent: kept when the delivery had no body stored yet, see take_outbox_batch)}): one append-only outbox_attempts row each; delivered, failed (not retried), retried after exactly retry_after or backoff with jitter, dead once past its deadline. Updates the destination''s health as for the whole batch (p_batch_delivered: its deliveries earlier calls recorded delivered; a batch''s failures go with or after its first success), holds it for retry_after or while it is down (no success in the batch), and pauses it when an adapter says so or it has failed for pause_after. Leaves the lease alone (p_worker only names the attempts): the take''s lease covers the batch.';

CREATE OR REPLACE FUNCTION parley.pause_destination(p_destination_id uuid, p_reason text)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  UPDATE parley.outbox_destinations d
     SET status = 'paused', paused_reason = left(p_reason, 1000), paused_at = now(), updated_at = now()
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_destination_id AND d.status = 'active';
  IF FOUND THEN
    PERFORM parley.on_destination_paused(p_destination_id);
  END IF;
END $$;
COMMENT ON FUNCTION parley.pause_destination(uuid, text) IS
  'Pause an active destination of the current tenant with a visible reason (its deliveries wait, pending, until it is resumed) and run parley.on_destination_paused (sql/83_alerts.sql: owners are e-mailed about a paused webhook endpoint).';

CREATE OR REPLACE FUNCTION parley.expire_outbox_deliveries() RETURNS int
LANGUAGE sql VOLATILE
SET enable_seqscan = off
AS $$
  WITH gone AS (
    UPDATE parley.outbox o SET status = 'dead', finished_at = now(),
                               last_error = coalesce(o.last_error, 'Not delivered within the retry window.')
     WHERE o.tenant_id = parley.current_tenant_id() AND o.status = 'pending' AND o.deadline < now() - interval '1 hour'
    RETURNING 1)
  SELECT count(*)::int FROM gone
$$;
COMMENT ON FUNCTION parley.expire_outbox_deliveries() IS
  'Jobs, per tenant: dead-letter pending deliveries more than an hour past their deadline that no drainer got to (their destination is paused or held); returns how many.';

-- A post split in parts (a long message to Telegram) notes each part as it is delivered, before
-- the attempt's result: a drainer that dies half way leaves the next one only the rest to send.
CREATE OR REPLACE FUNCTION parley.note_parts_sent(p_destination_id uuid, p_id bigint, p_created_at timestamptz,
                                                 p_parts_sent int)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.outbox o SET parts_sent = greatest(o.parts_sent, p_parts_sent)
   WHERE o.tenant_id = parley.current_tenant_id() AND o.destination_id = p_destination_id
     AND o.id = p_id AND o.created_at = p_created_at AND o.status = 'pending'
$$;
COMMENT ON FUNCTION parley.note_parts_sent(uuid, bigint, timestamptz, int) IS
  'Drainers, while a split post is sent: its first p_parts_sent parts are delivered (never fewer than noted before), so a retry after the drainer died sends the rest (take_channel_batch hands parts_sent to the sender). A pending delivery of the current tenant only.';

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_jobs}',
  'parley.record_outbox_results(uuid, text, jsonb, int)', 'parley.pause_destination(uuid, text)',
  'parley.expire_outbox_deliveries()', 'parley.note_parts_sent(uuid, bigint, timestamptz, int)');
