-- The outbox for operators (admins, through the API and the console): the destinations and
-- their health, the delivery log, replay of one delivery or a whole dead-letter queue, resume
-- of a paused destination, removal. The queue itself (enqueue, drain, retries) is sql/80_outbox.sql
-- and sql/80_outbox_results.sql.


-- The one replay: finished deliveries sent again, each as a new pending delivery with its
-- delivery_key (receivers see the same webhook-id) and a fresh retry window, in their order.
CREATE OR REPLACE FUNCTION parley.replay_deliveries(p_ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_ids bigint[];
BEGIN
  PERFORM parley.require_role('admin');
  WITH old AS (
    SELECT o.* FROM parley.outbox o
     WHERE o.tenant_id = parley.current_tenant_id() AND o.id = ANY (p_ids) AND o.status <> 'pending'
  ), replayed AS (
    UPDATE parley.outbox o SET status = 'replayed'
      FROM old
     WHERE o.tenant_id = old.tenant_id AND o.id = old.id AND o.created_at = old.created_at
       AND old.status IN ('dead', 'failed')
  ), fresh AS (
    INSERT INTO parley.outbox (tenant_id, destination_id, event_id, kind, conversation_id, payload, delivery_key,
                               deadline, replay_of)
    SELECT o.tenant_id, o.destination_id, o.event_id, o.kind, o.conversation_id, o.payload, o.delivery_key,
           now() + d.retry_window, o.id
      FROM old o JOIN parley.outbox_destinations d ON d.tenant_id = o.tenant_id AND d.id = o.destination_id
     ORDER BY o.id
    RETURNING id
  )
  SELECT array_agg(f.id ORDER BY f.id) INTO v_ids FROM fresh f;
  IF v_ids IS NOT NULL THEN
    PERFORM pg_notify('parley_outbox', parley.current_tenant_id()::text);
  END IF;
  RETURN coalesce(v_ids, '{}');
END $$;
COMMENT ON FUNCTION parley.replay_deliveries(bigint[]) IS
  'Admins (the replays below): send the finished (not pending) deliveries p_ids of the current tenant again, each as a new pending delivery with the same delivery_key and a fresh retry window, in id order; a dead or failed original becomes replayed. Returns the new ids; NOTIFY parley_outbox when any.';

CREATE OR REPLACE FUNCTION parley.replay_delivery(p_delivery_id bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_status text;
BEGIN
  PERFORM parley.require_role('admin');
  SELECT o.status INTO v_status FROM parley.outbox o
   WHERE o.tenant_id = parley.current_tenant_id() AND o.id = p_delivery_id FOR UPDATE;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such delivery.');
  END IF;
  IF v_status = 'pending' THEN
    PERFORM parley.raise_error(409, 'pending', 'This delivery is still being tried.');
  END IF;
  RETURN (parley.replay_deliveries(ARRAY[p_delivery_id]))[1];
END $$;
COMMENT ON FUNCTION parley.replay_delivery(bigint) IS
  'Admins: send a finished delivery of the current tenant again (replay_deliveries: same delivery_key, fresh retry window; a dead or failed original becomes replayed); the new id. 404 for another tenant''s id, 409 while it is pending. NOTIFY parley_outbox.';

CREATE OR REPLACE FUNCTION parley.replay_dead_letters(p_destination_id uuid, p_include_failed boolean DEFAULT false)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  IF NOT EXISTS (SELECT 1 FROM parley.outbox_destinations d
                  WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_destination_id) THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such destination.');
  END IF;
  RETURN cardinality(parley.replay_deliveries(ARRAY(
    SELECT o.id FROM parley.outbox o
     WHERE o.tenant_id = parley.current_tenant_id() AND o.destination_id = p_destination_id
       AND (o.status = 'dead' OR (p_include_failed AND o.status = 'failed'))
     FOR UPDATE)));
END $$;
COMMENT ON FUNCTION parley.replay_dead_letters(uuid, boolean) IS
  'Admins: replay a destination''s whole dead-letter queue (and its failed deliveries with p_include_failed), in their original order, each with its delivery_key (replay_deliveries); returns how many. NOTIFY parley_outbox.';

CREATE OR REPLACE FUNCTION parley.resume_destination(p_destination_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  UPDATE parley.outbox_destinations d
     SET status = 'active', paused_reason = NULL, paused_at = NULL, failing_since = NULL,
         consecutive_failures = 0, next_send_at = '-infinity', updated_at = now()
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_destination_id AND d.status <> 'disabled';
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such destination.');
  END IF;
  PERFORM pg_notify('parley_outbox', parley.current_tenant_id()::text);
END $$;
COMMENT ON FUNCTION parley.resume_destination(uuid) IS
  'Admins: resume a paused destination (its waiting deliveries go out, nothing held); 404 when unknown or disabled.';
GRANT UPDATE (status, paused_reason, paused_at, failing_since, consecutive_failures, next_send_at, updated_at)
   ON parley.outbox_destinations TO parley_app;

CREATE OR REPLACE FUNCTION parley.list_destinations()
RETURNS TABLE (id uuid, kind text, name text, target text, event_kinds text[], chatbot_id uuid, ordered boolean,
               status text, paused_reason text, paused_at timestamptz, failing_since timestamptz,
               consecutive_failures int, last_success_at timestamptz, last_error text, next_send_at timestamptz,
               pending bigint, dead bigint, failed bigint, created_at timestamptz)
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  RETURN QUERY
    SELECT d.id, d.kind, d.name, d.target, d.event_kinds, d.chatbot_id, d.ordered, d.status, d.paused_reason,
           d.paused_at, d.failing_since, d.consecutive_failures, d.last_success_at, d.last_error,
           CASE WHEN d.next_send_at > now() THEN d.next_send_at END,
           (SELECT count(*) FROM parley.outbox o WHERE o.tenant_id = d.tenant_id AND o.destination_id = d.id AND o.status = 'pending'),
           (SELECT count(*) FROM parley.outbox o WHERE o.tenant_id = d.tenant_id AND o.destination_id = d.id AND o.status = 'dead'),
           (SELECT count(*) FROM parley.outbox o WHERE o.tenant_id = d.tenant_id AND o.destination_id = d.id AND o.status = 'failed'),
           d.created_at
      FROM parley.outbox_destinations d
     WHERE d.tenant_id = parley.current_tenant_id()
     ORDER BY d.kind, d.name, d.id;
END $$;
COMMENT ON FUNCTION parley.list_destinations() IS
  'Admins: the current tenant''s destinations with their health (status, pause reason, failing since, last error, held until) and how many deliveries are pending, dead or failed.';

CREATE OR REPLACE FUNCTION parley.list_deliveries(p_destination_id uuid DEFAULT NULL, p_status text DEFAULT NULL,
                                                 p_before_id bigint DEFAULT NULL, p_limit int DEFAULT 50)
RETURNS TABLE (id bigint, created_at timestamptz, destination_id uuid, destination_name text, kind text,
               delivery_key uuid, status text, attempts int, next_attempt_at timestamptz, deadline timestamptz,
               last_status_code int, last_error text, finished_at timestamptz, replay_of bigint, event_id bigint,
               conversation_id uuid)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_before bigint := coalesce(p_before_id, 9223372036854775807);
  v_limit int := least(greatest(coalesce(p_limit, 50), 1), 500);
BEGIN
  PERFORM parley.require_role('admin');
  RETURN QUERY
    SELECT o.id, o.created_at, o.destination_id, d.name, o.kind, o.delivery_key, o.status, o.attempts,
           o.next_attempt_at, o.deadline, o.last_status_code, o.last_error, o.finished_at, o.replay_of,
           o.event_id, o.conversation_id
      FROM parley.outbox o JOIN parley.outbox_destinations d ON d.tenant_id = o.tenant_id AND d.id = o.destination_id
     WHERE o.tenant_id = parley.current_tenant_id() AND o.id < v_before
       AND (p_destination_id IS NULL OR o.destination_id = p_destination_id)
       AND (p_status IS NULL OR o.status = p_status)
     ORDER BY o.id DESC
     LIMIT v_limit;
END $$;
COMMENT ON FUNCTION parley.list_deliveries(uuid, text, bigint, int) IS
  'Admins: the delivery log of the current tenant, newest first (keyset on id), optionally one destination and one status (''dead'' = the dead-letter queue); at most 500 rows.';

CREATE OR REPLACE FUNCTION parley.get_delivery(p_delivery_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v jsonb;
BEGIN
  PERFORM parley.require_role('admin');
  SELECT to_jsonb(o) - 'tenant_id' || jsonb_build_object('destination_name', d.name,
           -- Not taken yet: the body it will carry.
           'payload', CASE WHEN o.payload = '{}' AND o.event_id IS NOT NULL
                           THEN parley.event_delivery_payload(o.event_id) ELSE o.payload END,
           'attempts_log', coalesce((SELECT jsonb_agg(to_jsonb(a) - 'tenant_id' ORDER BY a.attempt, a.id)
                                       FROM parley.outbox_attempts a
                                      WHERE a.tenant_id = o.tenant_id AND a.delivery_id = o.id), '[]'))
    INTO v
    FROM parley.outbox o JOIN parley.outbox_destinations d ON d.tenant_id = o.tenant_id AND d.id = o.destination_id
   WHERE o.tenant_id = parley.current_tenant_id() AND o.id = p_delivery_id;
  IF v IS NULL THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such delivery.');
  END IF;
  RETURN v;
END $$;
COMMENT ON FUNCTION parley.get_delivery(bigint) IS
  'Admins: one delivery of the current tenant with its payload and every attempt (status, latency, error, request headers, truncated response); 404 otherwise.';

CREATE OR REPLACE FUNCTION parley.delete_destination(p_destination_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  DELETE FROM parley.outbox_destinations d
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_destination_id;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such destination.');
  END IF;
  -- No foreign key from the outbox (see migration 0009): its deliveries and attempts go here.
  DELETE FROM parley.outbox o WHERE o.tenant_id = parley.current_tenant_id() AND o.destination_id = p_destination_id;
  DELETE FROM parley.outbox_rate_buckets b
   WHERE b.tenant_id = parley.current_tenant_id() AND b.key LIKE 'dest:' || p_destination_id::text || '%';
END $$;
COMMENT ON FUNCTION parley.delete_destination(uuid) IS
  'Admins: delete a destination of the current tenant with its deliveries (the attempts log ages out with its partitions); 404 when unknown.';
GRANT DELETE ON parley.outbox_destinations, parley.outbox TO parley_app;
