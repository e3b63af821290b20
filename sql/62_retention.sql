-- Retention and partitions: what the jobs process deletes, and when; what DBAs read in the
-- `ops` schema (ops.partitions, ops.retention_status) and `parley partitions` manages.
--
-- The rules, each in one place here:
--   * messages and events: a tenant keeps them retention_days (parley.effective_limits, the
--     plan's or the tenant's override; 0 = forever). A monthly partition goes whole only once
--     every live tenant's retention has passed it (parley.partition_keep); until then the
--     jobs process deletes each tenant's older rows in batches (parley.apply_retention).
--   * closed conversations (with everything hanging off them) go retention_days after closing.
--   * audit_log: 180 days, by partition only (the trail is append-only: no row is deleted).
--   * outbox, outbox_attempts: about two months (a delivery retries for 72 h).

-- Retention ---------------------------------------------------------------------------

-- The per-tenant horizon: NULL keeps forever. STABLE reader of effective_limits.
CREATE OR REPLACE FUNCTION parley.retention_cutoff(p_tenant_id uuid) RETURNS timestamptz
LANGUAGE sql STABLE
AS $$
  SELECT CASE WHEN coalesce(l.retention_days, 0) > 0 THEN now() - make_interval(days => l.retention_days) END
    FROM parley.effective_limits(p_tenant_id) l
$$;
COMMENT ON FUNCTION parley.retention_cutoff(uuid) IS
  'The instant before which a tenant''s messages, events and closed conversations are past retention (its effective retention_days; NULL when it keeps forever or is not visible).';
GRANT EXECUTE ON FUNCTION parley.retention_cutoff(uuid) TO parley_app, parley_jobs, parley_reporting;

DROP FUNCTION IF EXISTS parley.apply_retention();
-- Per tenant: a batch of the oldest messages and one of the oldest events before the cutoff, then
-- the closed conversations past retention (cascade: what is left of their messages and events,
-- feedback, ratings, assistant turns) as many as a batch holds, each weighed with the messages and
-- events its cascade deletes, so a large backlog is worked off over several short runs. (Deleted
-- all at once, a plan's retention lowered from a year to 30 days took a year of conversations with
-- every message in one transaction.) A closed conversation heavier than a batch waits while the
-- message and event batches, oldest first, take its rows.
-- Both tables' batches are the same two statements (table and time column filled in): the
-- instant of the p_batch-th oldest row is read on the (tenant_id, <time>) index, then the tenant's
-- rows up to that instant go by the same index, in the partitions that range covers, so a batch
-- reads what it deletes (joining the batch's ids back to the table read every row the tenant had
-- before the cutoff, for each batch). Rows stored at that same last instant go with it.
-- SECURITY DEFINER (owner) so the jobs role needs no DELETE grant; FORCE RLS still keeps
-- it inside the tenant set by begin_request.
CREATE OR REPLACE FUNCTION parley.apply_retention(p_batch int DEFAULT 5000) RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_cutoff timestamptz;
  v_table text;
  v_at text;
  v_upto timestamptz;
  v_n int;
  v_total int := 0;
BEGIN
  IF v_tenant IS NULL THEN
    RETURN 0;
  END IF;
  v_cutoff := parley.retention_cutoff(v_tenant);
  IF v_cutoff IS NULL THEN
    RETURN 0;  -- keeps forever
  END IF;
  FOR v_table, v_at IN VALUES ('parley.messages', 'created_at'), ('parley.events', 'at') LOOP
    EXECUTE format('SELECT max(b.at) FROM (SELECT r.%2$I AS at FROM %1$s r WHERE r.tenant_id = $1 AND r.%2$I < $2'
                   ' ORDER BY r.%2$I LIMIT $3) b', v_table, v_at)
       INTO v_upto USING v_tenant, v_cutoff, p_batch;
    EXECUTE format('DELETE FROM %1$s r WHERE r.tenant_id = $1 AND r.%2$I <= $2', v_table, v_at) USING v_tenant, v_upto;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_total := v_total + v_n;
  END LOOP;
  WITH due AS (
    SELECT c.id, coalesce(c.closed_at, c.last_activity_at) AS t
      FROM parley.conversations c
     WHERE c.tenant_id = v_tenant AND c.status = 'closed' AND coalesce(c.closed_at, c.last_activity_at) < v_cutoff
     ORDER BY 2, c.id
     LIMIT p_batch
  ), weighed AS (
    SELECT d.id, d.t,
           1 + (SELECT count(*) FROM parley.messages m WHERE m.tenant_id = v_tenant AND m.conversation_id = d.id)
             + (SELECT count(*) FROM parley.events e WHERE e.tenant_id = v_tenant AND e.conversation_id = d.id) AS w
      FROM due d
  ), light AS (
    SELECT x.id, sum(x.w) OVER (ORDER BY x.t, x.id) AS upto FROM weighed x WHERE x.w <= p_batch
  )
  DELETE FROM parley.conversations c USING light l
   WHERE c.tenant_id = v_tenant AND c.id = l.id AND l.upto <= p_batch;
  GET DIAGNOSTICS v_n = ROW_COUNT;
  RETURN v_total + v_n;
END $$;
COMMENT ON FUNCTION parley.apply_retention(int) IS
  'Jobs, per tenant: delete the oldest p_batch messages and p_batch events older than the tenant''s retention cutoff (and any stored at the same instant as a batch''s last), then its closed conversations past retention, oldest first, as many as fit in p_batch rows counting the messages and events each one''s cascade deletes (one heavier than that waits for the message and event batches); returns how many messages, events and conversations went (0 when it keeps forever, or nothing is due). Run again while it returns rows.';

-- Partitions --------------------------------------------------------------------------

-- The views below are parley_reporting's (BYPASSRLS, reads only): every tenant at once.
GRANT SELECT ON parley.tenants, parley.plans, parley.tenant_limits, parley.subscriptions TO parley_reporting;
GRANT SELECT (tenant_id, at) ON parley.events TO parley_reporting;
GRANT SELECT (tenant_id, status, closed_at, last_activity_at) ON parley.conversations TO parley_reporting;
-- Cross-tenant (every live tenant's retention): SECURITY DEFINER owned by parley_auth, the
-- owner of the few cross-tenant lookups.
GRANT SELECT ON parley.tenants, parley.plans, parley.tenant_limits, parley.subscriptions TO parley_auth;
CREATE OR REPLACE FUNCTION parley.partition_keep(p_table regclass) RETURNS interval
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_forever boolean;
  v_days int;
BEGIN
  IF p_table IN ('parley.messages'::regclass, 'parley.events'::regclass) THEN
    SELECT bool_or(coalesce(l.retention_days, 0) = 0), max(l.retention_days)
      INTO v_forever, v_days
      FROM parley.tenants t CROSS JOIN LATERAL parley.effective_limits(t.id) l
     WHERE t.deleted_at IS NULL;
    IF v_forever OR v_days IS NULL THEN
      RETURN NULL;  -- some tenant keeps forever (or there is none to ask): nothing goes whole
    END IF;
    RETURN make_interval(days => v_days);
  ELSIF p_table = 'parley.audit_log'::regclass THEN
    RETURN interval '180 days';
  ELSIF p_table IN ('parley.outbox'::regclass, 'parley.outbox_attempts'::regclass) THEN
    RETURN interval '62 days';
  END IF;
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.partition_keep(regclass) IS
  'How long a range-partitioned table''s rows are kept, across all tenants: messages and events the longest effective retention of any live tenant (NULL = forever while any keeps forever), audit_log 180 days, outbox and outbox_attempts 62 days; NULL for other tables (never dropped). A monthly partition whose range ends before now() minus this may be dropped whole.';

SELECT parley.ensure_view('ops.partitions', NULL, 'parley_reporting', $$
  SELECT p.parent::text AS table_name,
         p.part::text AS partition_name,
         p.range_from, p.range_to,
         p.range_to IS NULL AS is_default,
         CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END AS row_estimate,
         pg_total_relation_size(p.part) AS bytes,
         pg_size_pretty(pg_total_relation_size(p.part)) AS size,
         k.keep,
         coalesce(p.range_to <= now() - k.keep, false) AS expired
    FROM (SELECT i.inhparent::regclass AS parent, i.inhrelid::regclass AS part,
                 (regexp_match(pg_get_expr(r.relpartbound, r.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz AS range_from,
                 (regexp_match(pg_get_expr(r.relpartbound, r.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS range_to
            FROM pg_partitioned_table pt
            JOIN pg_class t ON t.oid = pt.partrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'parley'
            JOIN pg_inherits i ON i.inhparent = t.oid
            JOIN pg_class r ON r.oid = i.inhrelid
           WHERE pt.partstrat = 'r') p
    JOIN pg_class c ON c.oid = p.part
    CROSS JOIN LATERAL (SELECT parley.partition_keep(p.parent) AS keep) k
   ORDER BY p.parent::text, p.range_from NULLS FIRST$$);
COMMENT ON VIEW ops.partitions IS
  'Every partition of parley''s range-partitioned tables: its range (NULL for the default partition), row estimate (from ANALYZE; NULL before), size, how long its table keeps rows, and whether it has expired (may be dropped whole: parley.drop_expired_partitions).';

-- Drop (or, with p_dry_run, only list) every expired monthly partition of p_table (all
-- partitioned tables when NULL). The default partition never goes.
CREATE OR REPLACE FUNCTION parley.drop_expired_partitions(p_dry_run boolean DEFAULT false, p_table regclass DEFAULT NULL)
RETURNS TABLE (partition_name text, range_to timestamptz, row_estimate bigint, bytes bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  r record;
BEGIN
  FOR r IN
    SELECT p.partition_name, p.range_to, p.row_estimate, p.bytes FROM ops.partitions p
     WHERE p.expired AND NOT p.is_default AND (p_table IS NULL OR p.table_name = p_table::text)
     ORDER BY p.table_name, p.range_to
  LOOP
    IF NOT p_dry_run THEN
      EXECUTE format('DROP TABLE %s', r.partition_name);
    END IF;
    partition_name := r.partition_name; range_to := r.range_to;
    row_estimate := r.row_estimate; bytes := r.bytes;
    RETURN NEXT;
  END LOOP;
END $$;
COMMENT ON FUNCTION parley.drop_expired_partitions(boolean, regclass) IS
  'Operators and jobs: drop the monthly partitions ops.partitions marks expired (of one table, or all), returning each one; with p_dry_run nothing is dropped, only listed.';

-- Globally: monthly partitions of messages, events, the audit trail and the outbox created ahead,
-- and expired ones dropped.
CREATE OR REPLACE FUNCTION parley.maintain_partitions(p_months_ahead int DEFAULT 3)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_created int := 0;
  v_dropped int := 0;
  v_table regclass;
BEGIN
  FOREACH v_table IN ARRAY ARRAY['parley.messages'::regclass, 'parley.events'::regclass, 'parley.audit_log'::regclass,
                                 'parley.outbox'::regclass, 'parley.outbox_attempts'::regclass] LOOP
    v_created := v_created + parley.ensure_monthly_partitions(v_table, p_months_ahead);
    v_dropped := v_dropped + (SELECT count(*)::int FROM parley.drop_expired_partitions(false, v_table));
  END LOOP;
  RETURN jsonb_build_object('created', v_created, 'dropped', v_dropped);
END $$;
COMMENT ON FUNCTION parley.maintain_partitions(int) IS
  'Jobs: create monthly partitions of messages, events, audit_log, outbox and outbox_attempts p_months_ahead months ahead, and drop their expired ones (parley.partition_keep: messages and events only once every live tenant''s retention has passed them, audit after 180 days, the outbox''s delivery log and dead letters after 62 days).';

-- Each tenant's retention, for DBAs: what is past its cutoff and still there.
SELECT parley.ensure_view('ops.retention_status', NULL, 'parley_reporting', $$
  SELECT t.id AS tenant_id, t.slug, t.plan, l.retention_days,
         parley.retention_cutoff(t.id) AS cutoff,
         (SELECT min(m.created_at) FROM parley.messages m WHERE m.tenant_id = t.id) AS oldest_message_at,
         (SELECT count(*) FROM parley.messages m
           WHERE m.tenant_id = t.id AND m.created_at < parley.retention_cutoff(t.id)) AS messages_due,
         (SELECT count(*) FROM parley.events e
           WHERE e.tenant_id = t.id AND e.at < parley.retention_cutoff(t.id)) AS events_due,
         (SELECT count(*) FROM parley.conversations c
           WHERE c.tenant_id = t.id AND c.status = 'closed'
             AND coalesce(c.closed_at, c.last_activity_at) < parley.retention_cutoff(t.id)) AS closed_conversations_due
    FROM parley.tenants t CROSS JOIN LATERAL parley.effective_limits(t.id) l
   WHERE t.deleted_at IS NULL$$);
COMMENT ON VIEW ops.retention_status IS
  'Per live tenant: effective retention_days (0 = forever), the cutoff, the oldest message kept, and the messages, events and closed conversations past the cutoff that the retention job has still to delete.';

-- Owners and EXECUTE grants of the functions above (parley.secure_functions, 05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_jobs}', 'parley.apply_retention(int)',
  'parley.drop_expired_partitions(boolean, regclass)', 'parley.maintain_partitions(int)');
SELECT parley.secure_functions('parley_auth', '{parley_owner, parley_jobs, parley_reporting}',
  'parley.partition_keep(regclass)');
