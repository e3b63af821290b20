-- Traces across the outbox (issue 14 §6). With traces on, the server's tenant transaction sets
-- app.traceparent (pyapp/db.py; per message in post_visitor_messages) to its current span; every
-- row written into parley.outbox, whichever function writes it (event trigger, alerts, operators'
-- replays, referrals), keeps it by the column's default, and the drainer sends it as a child of
-- that span (jobs/outbox.py). With traces off nothing sets the setting and the column stays NULL.

CREATE OR REPLACE FUNCTION parley.current_traceparent() RETURNS text
LANGUAGE sql STABLE
AS $$
  SELECT s.v FROM (SELECT current_setting('app.traceparent', true) AS v) s
   WHERE s.v ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
     AND s.v !~ '^00-0{32}-' AND s.v !~ '^00-[0-9a-f]{32}-0{16}-'
$$;
COMMENT ON FUNCTION parley.current_traceparent() IS
  'The W3C traceparent (version 00) the current transaction runs under (setting app.traceparent, set by the server only while traces are on); NULL when unset, empty or not a valid traceparent (all-zero ids included), so nothing malformed reaches an outbox row. The default of parley.outbox.traceparent.';

-- Only when it is not already so (compared as deparsed, set on a scratch copy): ALTER TABLE locks
-- the outbox and all its partitions.
DO $$
DECLARE
  v_scratch regclass := parley.scratch_copy('parley.outbox');
  v_same boolean;
BEGIN
  EXECUTE format('ALTER TABLE %s ALTER COLUMN traceparent SET DEFAULT parley.current_traceparent()', v_scratch);
  SELECT count(DISTINCT pg_get_expr(d.adbin, d.adrelid)) = 1 AND count(*) = 2 INTO v_same
    FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
   WHERE d.adrelid IN ('parley.outbox'::regclass, v_scratch) AND a.attname = 'traceparent';
  EXECUTE format('DROP TABLE %s', v_scratch);
  IF NOT v_same THEN
    ALTER TABLE parley.outbox ALTER COLUMN traceparent SET DEFAULT parley.current_traceparent();
  END IF;
END $$;

CREATE OR REPLACE FUNCTION parley.outbox_traceparents(p_destination_id uuid, p_ids bigint[])
RETURNS TABLE (id bigint, traceparent text)
LANGUAGE sql STABLE
AS $$
  SELECT o.id, o.traceparent FROM parley.outbox o
   WHERE o.tenant_id = parley.current_tenant_id() AND o.destination_id = p_destination_id
     AND o.status = 'pending' AND o.id = ANY (p_ids) AND o.traceparent IS NOT NULL
$$;
COMMENT ON FUNCTION parley.outbox_traceparents(uuid, bigint[]) IS
  'Drainers with traces on: the trace context (traceparent) of those of the given pending deliveries of a destination of the current tenant that were written under one, so each send continues the trace of the request that caused it.';
REVOKE ALL ON FUNCTION parley.outbox_traceparents(uuid, bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.outbox_traceparents(uuid, bigint[]) TO parley_jobs;
