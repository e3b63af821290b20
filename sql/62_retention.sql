-- Retention and partitions: what the jobs process deletes, and when.

-- Retention ---------------------------------------------------------------------------

-- Per tenant: closed conversations older than the plan's retention go, with their
-- messages, events, feedback, ratings and assistant turns (cascade). SECURITY DEFINER
-- (owner) so the jobs role needs no DELETE grant on conversations; FORCE RLS still keeps
-- it inside the tenant set by begin_request.
CREATE OR REPLACE FUNCTION parley.apply_retention() RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_days int;
  v_n int := 0;
BEGIN
  IF v_tenant IS NULL THEN
    RETURN 0;
  END IF;
  SELECT l.retention_days INTO v_days FROM parley.effective_limits(v_tenant) l;
  IF coalesce(v_days, 0) = 0 THEN
    RETURN 0;  -- unlimited
  END IF;
  DELETE FROM parley.conversations c
   WHERE c.tenant_id = v_tenant AND c.status = 'closed'
     AND coalesce(c.closed_at, c.last_activity_at) < now() - make_interval(days => v_days);
  GET DIAGNOSTICS v_n = ROW_COUNT;
  RETURN v_n;
END $$;
COMMENT ON FUNCTION parley.apply_retention() IS
  'Jobs: delete the current tenant''s closed conversations (and everything hanging off them) older than its retention_days (0 = keep forever); returns how many went.';
REVOKE ALL ON FUNCTION parley.apply_retention() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.apply_retention() TO parley_jobs;

-- Globally: monthly partitions of messages and events older than the longest retention in
-- force anywhere are dropped whole (cheap), and partitions are created ahead.
CREATE OR REPLACE FUNCTION parley.maintain_partitions(p_months_ahead int DEFAULT 3)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_max_days int;
  v_unlimited boolean;
  v_created int := 0;
  v_dropped int := 0;
  v_table regclass;
BEGIN
  SELECT bool_or(coalesce(o.retention_days, p.retention_days) = 0), max(coalesce(o.retention_days, p.retention_days))
    INTO v_unlimited, v_max_days
    FROM parley.tenants t JOIN parley.plans p ON p.id = t.plan
    LEFT JOIN parley.tenant_limits o ON o.tenant_id = t.id
   WHERE t.deleted_at IS NULL;
  FOREACH v_table IN ARRAY ARRAY['parley.messages'::regclass, 'parley.events'::regclass] LOOP
    v_created := v_created + parley.ensure_monthly_partitions(v_table, p_months_ahead);
    IF NOT coalesce(v_unlimited, false) AND v_max_days IS NOT NULL THEN
      v_dropped := v_dropped + parley.drop_partitions_before(v_table, now() - make_interval(days => v_max_days + 31));
    END IF;
  END LOOP;
  RETURN jsonb_build_object('created', v_created, 'dropped', v_dropped);
END $$;
COMMENT ON FUNCTION parley.maintain_partitions(int) IS
  'Jobs: create monthly partitions of messages and events p_months_ahead months ahead, and drop whole partitions older than the longest retention of any live tenant (none while any tenant keeps forever).';
REVOKE ALL ON FUNCTION parley.maintain_partitions(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.maintain_partitions(int) TO parley_jobs;
