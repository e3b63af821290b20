-- GDPR: export a visitor's or a whole tenant's data, erase a visitor, and purge a deleted tenant
-- after its grace period.
--
-- Exports are SECURITY INVOKER SQL functions read through a cursor by the server (streamed, never
-- built in memory), admins and owners only. Erasure and the purge delete personal data and are
-- SECURITY DEFINER functions owned by parley_purge: a NOLOGIN role without BYPASSRLS that may
-- delete in every tenant-owned table, so row-level security still confines it to the tenant of
-- the transaction (begin_request's, or the one the purge sets after checking its grace is over).
-- The tables are read from the catalog (tenant_id leading the primary key), so a new table is
-- covered by the purge, and given to parley_purge, at the next `parley migrate`.

---------------------------------------------------------------------------------------------
-- The tenant-owned tables
---------------------------------------------------------------------------------------------

-- Until the purge read its batches by row address and time and weighed them by foreign-key actions,
-- the catalog gave each table's key columns.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_proc WHERE oid = to_regprocedure('parley.tenant_owned_tables()')
                                     AND pg_get_function_result(oid) NOT LIKE '%referenced_by%') THEN
    DROP FUNCTION parley.tenant_owned_tables();
  END IF;
END $$;

CREATE OR REPLACE FUNCTION parley.tenant_owned_tables()
RETURNS TABLE (table_name regclass, depth int, partition_key name, referenced_by int)
LANGUAGE sql STABLE
AS $$
  WITH RECURSIVE owned AS (
    SELECT c.oid,
           (SELECT a.attname FROM pg_partitioned_table p
              JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
             WHERE p.partrelid = c.oid) AS partition_key,
           (SELECT count(*)::int FROM pg_constraint f
             WHERE f.contype = 'f' AND f.confrelid = c.oid AND f.conparentid = 0) AS referenced_by
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'parley'
      JOIN pg_constraint con ON con.conrelid = c.oid AND con.contype = 'p'
      JOIN pg_attribute first ON first.attrelid = c.oid AND first.attnum = con.conkey[1]
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND first.attname = 'tenant_id'
  ), refs AS (  -- referencing table -> referenced table, among them (self-references left out)
    SELECT DISTINCT f.conrelid AS child, f.confrelid AS parent
      FROM pg_constraint f
     WHERE f.contype = 'f' AND f.conparentid = 0 AND f.conrelid <> f.confrelid
       AND f.conrelid IN (SELECT oid FROM owned) AND f.confrelid IN (SELECT oid FROM owned)
  ), chain (oid, depth) AS (  -- how far a table is from the tables nothing references
    SELECT o.oid, 0 FROM owned o
    UNION ALL
    SELECT r.parent, ch.depth + 1 FROM chain ch JOIN refs r ON r.child = ch.oid WHERE ch.depth < 32
  )
  SELECT o.oid::regclass, max(ch.depth)::int, o.partition_key, o.referenced_by
    FROM owned o JOIN chain ch ON ch.oid = o.oid
   GROUP BY o.oid, o.partition_key, o.referenced_by
   ORDER BY max(ch.depth), o.oid::regclass::text
$$;
COMMENT ON FUNCTION parley.tenant_owned_tables() IS
  'Every tenant-owned table of schema parley (tenant_id leads its primary key; partitions through their parent), with its depth (tables that reference others come first, so deleting in this order never waits on a foreign key) and, for a partitioned table, the column it is range-partitioned by (its time column; NULL for a plain table), and how many foreign keys reference it (deleting one of its rows fires that many actions).';

---------------------------------------------------------------------------------------------
-- Which conversations and leads are one visitor's
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.gdpr_visitor_scope(p_conversation_id uuid, p_email text,
  OUT conversation_ids uuid[], OUT lead_ids uuid[])
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_email text := lower(btrim(p_email));
BEGIN
  PERFORM parley.require_role('admin');
  IF p_conversation_id IS NULL AND coalesce(v_email, '') = '' THEN
    PERFORM parley.raise_error(422, 'visitor_required', 'Name the visitor by a conversation id or an email address.');
  END IF;
  -- The visitor: the one of that conversation, and whoever left that email in a lead form.
  WITH visitors AS (
    SELECT c.visitor_id FROM parley.conversations c WHERE c.id = p_conversation_id
    UNION
    SELECT c.visitor_id FROM parley.leads l JOIN parley.conversations c ON c.tenant_id = l.tenant_id AND c.id = l.conversation_id
     WHERE v_email <> '' AND lower(l.email) = v_email
  )
  SELECT coalesce(array_agg(c.id ORDER BY c.created_at, c.id), '{}') INTO conversation_ids
    FROM parley.conversations c WHERE c.visitor_id IN (SELECT visitor_id FROM visitors);
  SELECT coalesce(array_agg(l.id ORDER BY l.created_at, l.id), '{}') INTO lead_ids
    FROM parley.leads l
   WHERE l.conversation_id = ANY (conversation_ids) OR (v_email <> '' AND lower(l.email) = v_email);
  IF cardinality(conversation_ids) = 0 AND cardinality(lead_ids) = 0 THEN
    PERFORM parley.raise_error(404, 'visitor_not_found', 'No conversation or lead of this visitor in this workspace.');
  END IF;
END $$;
COMMENT ON FUNCTION parley.gdpr_visitor_scope(uuid, text) IS
  'Admin+: a visitor''s conversations (every conversation of the visitor of p_conversation_id, and of the visitors who left p_email in a lead form) and leads (of those conversations, or with that email, case-insensitive) in the current tenant. 422 with neither given, 404 when nothing matches.';

---------------------------------------------------------------------------------------------
-- Export (read through a cursor; p_conversations / p_leads NULL = the whole tenant)
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.begin_gdpr_export(p_conversation_id uuid, p_email text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_scope record;
BEGIN
  PERFORM parley.require_role('admin');
  IF p_conversation_id IS NULL AND coalesce(btrim(p_email), '') = '' THEN
    PERFORM parley.write_audit('gdpr.tenant_exported', 'tenant', parley.current_tenant_id()::text);
    RETURN jsonb_build_object('scope', 'tenant', 'conversation_ids', NULL, 'lead_ids', NULL);
  END IF;
  SELECT * INTO v_scope FROM parley.gdpr_visitor_scope(p_conversation_id, p_email);
  PERFORM parley.write_audit('gdpr.visitor_exported', 'visitor', NULL,
    jsonb_build_object('conversations', cardinality(v_scope.conversation_ids), 'leads', cardinality(v_scope.lead_ids),
                       'by', CASE WHEN p_conversation_id IS NOT NULL THEN 'conversation' ELSE 'email' END));
  RETURN jsonb_build_object('scope', 'visitor', 'conversation_ids', to_jsonb(v_scope.conversation_ids),
                            'lead_ids', to_jsonb(v_scope.lead_ids));
END $$;
COMMENT ON FUNCTION parley.begin_gdpr_export(uuid, text) IS
  'Admin+: start an export of the whole tenant (no conversation id or email) or of one visitor (gdpr_visitor_scope); audited (gdpr.tenant_exported / gdpr.visitor_exported, counts only). Returns the scope the gdpr_export_* functions then read.';

CREATE OR REPLACE FUNCTION parley.gdpr_export_conversations(p_conversations uuid[])
RETURNS TABLE (id uuid, chatbot_id uuid, status text, visitor_id uuid, page_url text, referrer text,
               user_agent text, locale text, country text, ip text, created_at timestamptz,
               last_activity_at timestamptz, closed_at timestamptz)
LANGUAGE sql STABLE
AS $$
  SELECT c.id, c.chatbot_id, c.status, c.visitor_id, c.page_url, c.referrer, c.user_agent, c.locale, c.country,
         host(c.ip), c.created_at, c.last_activity_at, c.closed_at
    FROM parley.conversations c
   WHERE parley.actor_role_rank() >= parley.role_rank('admin')
     AND (p_conversations IS NULL OR c.id = ANY (p_conversations))
   ORDER BY c.created_at, c.id
$$;
COMMENT ON FUNCTION parley.gdpr_export_conversations(uuid[]) IS
  'Admin+ export: the tenant''s conversations (or those given) with the visitor''s details; nothing for lower roles.';

CREATE OR REPLACE FUNCTION parley.gdpr_export_messages(p_conversations uuid[])
RETURNS TABLE (id bigint, conversation_id uuid, created_at timestamptz, author text, author_id uuid, body text)
LANGUAGE sql STABLE
AS $$
  SELECT m.id, m.conversation_id, m.created_at, m.author, m.author_id, m.body
    FROM parley.messages m
   WHERE parley.actor_role_rank() >= parley.role_rank('admin')
     AND (p_conversations IS NULL OR m.conversation_id = ANY (p_conversations))
   ORDER BY m.conversation_id, m.id
$$;
COMMENT ON FUNCTION parley.gdpr_export_messages(uuid[]) IS
  'Admin+ export: every message (notes included) of the tenant''s conversations, or of those given.';

CREATE OR REPLACE FUNCTION parley.gdpr_export_leads(p_leads uuid[])
RETURNS TABLE (id uuid, conversation_id uuid, chatbot_id uuid, name text, email text, phone text, custom jsonb,
               status text, created_at timestamptz, updated_at timestamptz)
LANGUAGE sql STABLE
AS $$
  SELECT l.id, l.conversation_id, l.chatbot_id, l.name, l.email, l.phone, l.custom, l.status, l.created_at, l.updated_at
    FROM parley.leads l
   WHERE parley.actor_role_rank() >= parley.role_rank('admin')
     AND (p_leads IS NULL OR l.id = ANY (p_leads))
   ORDER BY l.created_at, l.id
$$;
COMMENT ON FUNCTION parley.gdpr_export_leads(uuid[]) IS 'Admin+ export: the tenant''s leads, or those given.';

CREATE OR REPLACE FUNCTION parley.gdpr_export_feedback(p_conversations uuid[])
RETURNS TABLE (kind text, conversation_id uuid, message_id bigint, value text, comment text, created_at timestamptz)
LANGUAGE sql STABLE
AS $$
  SELECT * FROM (
    SELECT 'message'::text, f.conversation_id, f.message_id, f.value, f.comment, f.created_at
      FROM parley.message_feedback f
     WHERE p_conversations IS NULL OR f.conversation_id = ANY (p_conversations)
    UNION ALL
    SELECT 'rating', r.conversation_id, NULL::bigint, r.score::text, r.comment, r.created_at
      FROM parley.conversation_ratings r
     WHERE p_conversations IS NULL OR r.conversation_id = ANY (p_conversations)) x
   WHERE parley.actor_role_rank() >= parley.role_rank('admin')
   ORDER BY 6, 2
$$;
COMMENT ON FUNCTION parley.gdpr_export_feedback(uuid[]) IS
  'Admin+ export: thumbs on bot messages and end-of-chat ratings (with comments) of the tenant''s conversations, or of those given.';

CREATE OR REPLACE FUNCTION parley.gdpr_export_knowledge_sources()
RETURNS TABLE (id uuid, chatbot_id uuid, kind text, title text, url text, filename text, status text,
               created_at timestamptz, updated_at timestamptz, last_imported_at timestamptz)
LANGUAGE sql STABLE
AS $$
  SELECT s.id, s.chatbot_id, s.kind, s.title, s.url, s.filename, s.status, s.created_at, s.updated_at, s.last_imported_at
    FROM parley.knowledge_sources s
   WHERE parley.actor_role_rank() >= parley.role_rank('admin')
   ORDER BY s.created_at, s.id
$$;
COMMENT ON FUNCTION parley.gdpr_export_knowledge_sources() IS 'Admin+ export: the tenant''s knowledge sources.';

CREATE OR REPLACE FUNCTION parley.gdpr_export_audit()
RETURNS TABLE (id bigint, at timestamptz, actor_kind text, actor_id text, action text, target_kind text,
               target_id text, ip text, request_id text, details jsonb)
LANGUAGE sql STABLE
AS $$
  SELECT a.id, a.at, a.actor_kind, a.actor_id, a.action, a.target_kind, a.target_id, host(a.ip), a.request_id, a.details
    FROM parley.audit_log a
   WHERE parley.actor_role_rank() >= parley.role_rank('admin')
   ORDER BY a.id
$$;
COMMENT ON FUNCTION parley.gdpr_export_audit() IS 'Admin+ export: the tenant''s audit trail, oldest first.';

---------------------------------------------------------------------------------------------
-- Erase a visitor
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.gdpr_erase_visitor(p_conversation_id uuid, p_email text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_scope record;
  v_convs uuid[];
  v_counts jsonb := '{}';
  v_n bigint;
  v_feedback bigint;
BEGIN
  PERFORM parley.require_role('admin');
  IF parley.current_tenant_id() IS NULL THEN
    PERFORM parley.raise_error(401, 'unauthenticated', 'No tenant in this transaction.');
  END IF;
  SELECT * INTO v_scope FROM parley.gdpr_visitor_scope(p_conversation_id, p_email);
  v_convs := v_scope.conversation_ids;
  -- Row-level security (the transaction's tenant) applies to every statement below.
  PERFORM 1 FROM parley.conversations c WHERE c.id = ANY (v_convs) ORDER BY c.id FOR UPDATE;
  DELETE FROM parley.message_feedback WHERE conversation_id = ANY (v_convs);
  GET DIAGNOSTICS v_n = ROW_COUNT;
  v_feedback := v_n;
  DELETE FROM parley.conversation_ratings WHERE conversation_id = ANY (v_convs);
  GET DIAGNOSTICS v_n = ROW_COUNT;
  v_counts := v_counts || jsonb_build_object('feedback', v_feedback + v_n);
  DELETE FROM parley.assistant_turns WHERE conversation_id = ANY (v_convs);
  DELETE FROM parley.outbox_attempts a
   WHERE a.delivery_id IN (SELECT o.id FROM parley.outbox o WHERE o.conversation_id = ANY (v_convs));
  DELETE FROM parley.outbox WHERE conversation_id = ANY (v_convs);
  -- Events: what carried text goes; the state changes stay (analytics count them), without data.
  DELETE FROM parley.events WHERE conversation_id = ANY (v_convs)
     AND kind IN ('message_added', 'lead_captured', 'note_added');
  UPDATE parley.events SET data = '{}' WHERE conversation_id = ANY (v_convs) AND data <> '{}';
  DELETE FROM parley.messages WHERE conversation_id = ANY (v_convs);
  GET DIAGNOSTICS v_n = ROW_COUNT;
  v_counts := v_counts || jsonb_build_object('messages', v_n);
  DELETE FROM parley.leads WHERE id = ANY (v_scope.lead_ids);
  GET DIAGNOSTICS v_n = ROW_COUNT;
  v_counts := v_counts || jsonb_build_object('leads', v_n);
  -- Rate windows keyed by the visitor's address or conversation (minutes old at most) go too.
  DELETE FROM parley.rate_counters r
   WHERE (r.scope = 'conversation' AND r.key = ANY (SELECT c::text FROM unnest(v_convs) c))
      OR (r.scope = 'ip' AND r.key = ANY (
            SELECT p || host(c.ip) FROM parley.conversations c, unnest(ARRAY['', 'session:', 'lead:']) p
             WHERE c.id = ANY (v_convs) AND c.ip IS NOT NULL));
  -- The conversations stay (counts, analytics) without anything that points at the person; a new
  -- visitor id unlinks them from the visitor's widget token.
  UPDATE parley.conversations
     SET visitor_id = gen_random_uuid(), page_url = NULL, referrer = NULL, user_agent = NULL, locale = NULL,
         country = NULL, ip = NULL, last_message_id = NULL
   WHERE id = ANY (v_convs);
  v_counts := v_counts || jsonb_build_object('conversations', cardinality(v_convs),
    'by', CASE WHEN p_conversation_id IS NOT NULL THEN 'conversation' ELSE 'email' END);
  PERFORM parley.write_audit('gdpr.visitor_erased', 'visitor', NULL, v_counts);
  RETURN v_counts;
END $$;
COMMENT ON FUNCTION parley.gdpr_erase_visitor(uuid, text) IS
  'Admin+: erase a visitor (gdpr_visitor_scope) in the current tenant: their messages, leads, feedback and ratings, assistant turns, outbox deliveries and the events that carried text go; their conversations stay with every personal field cleared and a new visitor id. Audited as gdpr.visitor_erased with counts only (never the email or any erased text). Returns the counts.';

---------------------------------------------------------------------------------------------
-- Delete a tenant: grace, restore, purge
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.tenant_purge_grace() RETURNS interval
LANGUAGE sql STABLE
AS $$ SELECT parley.server_setting('purge_grace', NULL::interval) $$;
COMMENT ON FUNCTION parley.tenant_purge_grace() IS
  'How long a deleted workspace can be restored before it is purged: the purge_grace setting of parley.server_setting_catalog, 30 days unless set (ALTER DATABASE … SET parley.purge_grace = ''7 days'').';

CREATE OR REPLACE FUNCTION parley.list_my_deleted_tenants() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT coalesce((SELECT jsonb_agg(jsonb_build_object('id', t.id, 'slug', t.slug, 'name', t.name,
                                                       'deleted_at', t.deleted_at, 'purge_after', t.purge_after)
                                    ORDER BY t.deleted_at DESC, t.id)
                     FROM parley.members m JOIN parley.tenants t ON t.id = m.tenant_id
                    WHERE m.user_id = me AND m.role = 'owner' AND t.deleted_at IS NOT NULL AND t.purge_after > now()),
                  '[]'::jsonb)
    FROM parley.require_signed_in() me
$$;
COMMENT ON FUNCTION parley.list_my_deleted_tenants() IS
  'Workspaces the signed-in person owns that are deleted but still in their grace period (restorable), with when they will be purged.';

CREATE OR REPLACE FUNCTION parley.restore_tenant(p_tenant_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid := parley.require_signed_in();
BEGIN
  UPDATE parley.tenants t SET deleted_at = NULL, purge_after = NULL
   WHERE t.id = p_tenant_id AND t.deleted_at IS NOT NULL AND t.purge_after > now()
     AND EXISTS (SELECT 1 FROM parley.members m WHERE m.tenant_id = t.id AND m.user_id = v_user AND m.role = 'owner');
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No deleted workspace of yours to restore (or its grace period is over).');
  END IF;
  PERFORM parley.write_audit('tenant.restored', 'tenant', p_tenant_id::text, '{}', p_tenant_id);
  RETURN parley.tenant_json(p_tenant_id, v_user);
END $$;
COMMENT ON FUNCTION parley.restore_tenant(uuid) IS
  'Cancel a workspace''s deletion during its grace period (an owner of it, signed in): it is live again, nothing was purged. 404 otherwise. Audited.';

CREATE OR REPLACE FUNCTION parley.tenants_due_for_purge(p_limit int) RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT coalesce(array_agg(x.id), '{}') FROM (
    SELECT t.id FROM parley.tenants t
     WHERE t.deleted_at IS NOT NULL AND t.purge_after <= now()
     ORDER BY t.purge_after, t.id LIMIT p_limit) x
$$;
COMMENT ON FUNCTION parley.tenants_due_for_purge(int) IS
  'Internal to the purge: deleted tenants whose grace is over, oldest first (a cross-tenant read, so owned by parley_auth).';

-- One batch of the purge in one table reads only the rows it deletes. A plain table: up to p_max
-- of the tenant's rows by their addresses (ctid). A table partitioned by time: the instant of the
-- tenant's (p_max + 1)-th oldest row, read on the (tenant_id, <time>) index, and every row of the
-- tenant before it, in the partitions that range covers, and as many as the batch still takes of the
-- rows at that instant, by their addresses in its one partition (a partitioned table without that
-- index, outbox and outbox_attempts, sorts the tenant's rows to find the instant). Either way a batch
-- deletes p_max rows, or every row left: one that took fewer while rows were left (the rows before
-- the instant were fewer than p_max, the rest tied at it) let the purge's pass go on to the tables
-- these rows reference, whose cascade then deleted them all in one batch, past its bound.
-- Joining a batch's keys back to the table read every row the tenant had in it (all partitions)
-- for each batch.
CREATE OR REPLACE FUNCTION parley.purge_table_batch(p_table regclass, p_partition_key name, p_tenant uuid,
                                                    p_max bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_next timestamptz;
  v_n bigint;
  v_taken bigint;
BEGIN
  IF p_partition_key IS NULL THEN
    EXECUTE format('DELETE FROM %1$s WHERE tenant_id = $1'
                   ' AND ctid = ANY (ARRAY(SELECT ctid FROM %1$s WHERE tenant_id = $1 LIMIT $2))', p_table)
      USING p_tenant, p_max;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
  END IF;
  EXECUTE format('SELECT %2$I FROM %1$s WHERE tenant_id = $1 ORDER BY %2$I OFFSET $2 LIMIT 1', p_table, p_partition_key)
     INTO v_next USING p_tenant, p_max;
  IF v_next IS NULL THEN  -- p_max rows or fewer left
    EXECUTE format('DELETE FROM %1$s WHERE tenant_id = $1', p_table) USING p_tenant;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
  END IF;
  EXECUTE format('DELETE FROM %1$s WHERE tenant_id = $1 AND %2$I < $2', p_table, p_partition_key)
    USING p_tenant, v_next;
  GET DIAGNOSTICS v_n = ROW_COUNT;
  IF v_n < p_max THEN  -- the rest of the batch from the rows at v_next (more than p_max rows left)
    EXECUTE format('DELETE FROM %1$s WHERE tenant_id = $1 AND %2$I = $2 AND ctid = ANY (ARRAY('
                   'SELECT ctid FROM %1$s WHERE tenant_id = $1 AND %2$I = $2 LIMIT $3))', p_table, p_partition_key)
      USING p_tenant, v_next, p_max - v_n;
    GET DIAGNOSTICS v_taken = ROW_COUNT;
    v_n := v_n + v_taken;
  END IF;
  RETURN v_n;
END $$;
COMMENT ON FUNCTION parley.purge_table_batch(regclass, name, uuid, bigint) IS
  'Internal to the purge (runs as parley_purge, under row-level security with the tenant set): delete at most p_max of tenant p_tenant''s rows of p_table, a plain table by row address, one partitioned by time (p_partition_key, from tenant_owned_tables) oldest first by range, so a batch reads only the rows it deletes. Deletes exactly p_max rows, or all that are left (so the purge reaches a referenced table only once the tables referencing it are empty). Returns how many went.';

CREATE OR REPLACE FUNCTION parley.purge_deleted_tenants(p_max_rows int DEFAULT 5000) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid;
  v_table record;
  v_left bigint := greatest(p_max_rows, 1);
  v_pass bigint;
  v_n bigint;
  v_total bigint := 0;
  v_row parley.tenants%ROWTYPE;
BEGIN
  FOREACH v_tenant IN ARRAY parley.tenants_due_for_purge(8) LOOP
    -- One purger per tenant at a time (two jobs processes share the work).
    CONTINUE WHEN NOT pg_try_advisory_xact_lock(hashtext('parley.purge'), hashtext(v_tenant::text));
    PERFORM set_config('app.tenant_id', v_tenant::text, true);
    PERFORM set_config('app.actor_kind', 'system', true);
    PERFORM set_config('app.actor_id', 'purge', true);
    SELECT * INTO v_row FROM parley.tenants t WHERE t.id = v_tenant;
    IF v_row.purge_after IS NULL OR v_row.purge_after > now() THEN
      CONTINUE;  -- restored in the meantime
    END IF;
    -- Passes over every table (children first), a batch at a time, until a pass finds nothing
    -- left (deleting some rows writes others: knowledge term counts, member audit rows). A row
    -- counts once more for every foreign key that references its table, since its deletion runs
    -- each one's action (5,000 conversations, seven cascades each, took 400-1,000 ms against
    -- 40-70 ms for 5,000 messages), so every batch stays about as short.
    LOOP
      v_pass := 0;
      FOR v_table IN SELECT * FROM parley.tenant_owned_tables() LOOP
        v_n := parley.purge_table_batch(v_table.table_name, v_table.partition_key, v_tenant,
                                        ceil(v_left::numeric / (1 + v_table.referenced_by))::bigint);
        v_pass := v_pass + v_n;
        v_left := v_left - v_n * (1 + v_table.referenced_by);
        EXIT WHEN v_left <= 0;
      END LOOP;
      v_total := v_total + v_pass;
      EXIT WHEN v_pass = 0 OR v_left <= 0;
    END LOOP;
    IF v_left <= 0 THEN
      RETURN v_total;  -- this batch is spent; the next run goes on
    END IF;
    DELETE FROM parley.tenants WHERE id = v_tenant;
    DELETE FROM parley.audit_log WHERE tenant_id = v_tenant;  -- the trail of the row just deleted
    INSERT INTO parley.tenant_purges (tenant_id, deleted_at, purge_after)
    VALUES (v_tenant, v_row.deleted_at, v_row.purge_after)
    ON CONFLICT (tenant_id) DO NOTHING;
  END LOOP;
  RETURN v_total;
END $$;
COMMENT ON FUNCTION parley.purge_deleted_tenants(int) IS
  'Jobs (and parley gdpr purge): delete every row of deleted tenants whose grace is over, in batches of at most p_max_rows rows per call (a row counting once more for each foreign key that references its table), table by table from the catalog (tenant_owned_tables, children first; purge_table_batch), then the tenant row itself; a purged tenant leaves only a parley.tenant_purges record (ids and times). Runs as parley_purge under row-level security with the tenant being purged set. Returns rows deleted; call again while it returns rows.';

---------------------------------------------------------------------------------------------
-- parley_purge: rights and policies (re-applied over the catalog at every migrate)
---------------------------------------------------------------------------------------------

DO $$
DECLARE
  v_table regclass;
BEGIN
  FOR v_table IN SELECT t.table_name FROM parley.tenant_owned_tables() t LOOP
    IF v_table = 'parley.audit_log'::regclass THEN
      -- The trail stays append-only for everyone, except for the purge of a tenant past its grace
      -- (or already gone: the tenant row's own deletion is audited after it).
      EXECUTE 'GRANT SELECT, DELETE ON parley.audit_log TO parley_purge';
      PERFORM parley.ensure_policy(v_table, 'delete_purged', 'FOR DELETE TO parley_purge
                 USING (tenant_id = (SELECT parley.current_tenant_id())
                        AND (EXISTS (SELECT 1 FROM parley.tenants t WHERE t.id = audit_log.tenant_id
                                        AND t.purge_after <= now())
                             OR NOT EXISTS (SELECT 1 FROM parley.tenants t WHERE t.id = audit_log.tenant_id)))');
    ELSE
      EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO parley_purge', v_table);
      PERFORM parley.ensure_policy(v_table, 'all_purge', 'FOR ALL TO parley_purge
                        USING (tenant_id = (SELECT parley.current_tenant_id()))
                        WITH CHECK (tenant_id = (SELECT parley.current_tenant_id()))');
    END IF;
  END LOOP;
END $$;
GRANT SELECT, DELETE, UPDATE (purge_after) ON parley.tenants TO parley_purge;  -- UPDATE: the last-owner trigger locks the row
SELECT parley.ensure_policy('parley.tenants', 'delete_purged', $$FOR DELETE TO parley_purge
  USING (id = (SELECT parley.current_tenant_id()) AND purge_after <= now())$$);
SELECT parley.force_row_security('parley.tenant_purges');
SELECT parley.ensure_policy('parley.tenant_purges', 'insert_purge', 'FOR INSERT TO parley_purge WITH CHECK (true)');
SELECT parley.ensure_policy('parley.tenant_purges', 'select_purge', 'FOR SELECT TO parley_purge USING (true)');
GRANT SELECT, INSERT ON parley.tenant_purges TO parley_purge;
GRANT SELECT ON parley.tenant_purges TO parley_auth;

-- Who runs what: the server (parley_app: the console and API), the jobs process (parley_jobs: the
-- purge job, `parley gdpr`), and what the purge itself calls as parley_purge.
SELECT parley.secure_functions('parley_purge', '{parley_app, parley_jobs}', 'parley.gdpr_erase_visitor(uuid, text)');
SELECT parley.secure_functions('parley_purge', '{parley_jobs}', 'parley.purge_deleted_tenants(int)');
SELECT parley.secure_functions('parley_auth', '{parley_app}',
  'parley.list_my_deleted_tenants()', 'parley.restore_tenant(uuid)');
SELECT parley.secure_functions('parley_auth', '{parley_purge}', 'parley.tenants_due_for_purge(int)');
SELECT parley.secure_functions(NULL, '{parley_purge}', 'parley.tenant_owned_tables()',
  'parley.purge_table_batch(regclass, name, uuid, bigint)');
SELECT parley.secure_functions(NULL, '{parley_app}', 'parley.tenant_purge_grace()');
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs, parley_purge}', 'parley.gdpr_visitor_scope(uuid, text)');
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs}',
  'parley.begin_gdpr_export(uuid, text)', 'parley.gdpr_export_conversations(uuid[])',
  'parley.gdpr_export_messages(uuid[])', 'parley.gdpr_export_leads(uuid[])', 'parley.gdpr_export_feedback(uuid[])',
  'parley.gdpr_export_knowledge_sources()', 'parley.gdpr_export_audit()');
-- What the functions owned by parley_purge call as it (require_role, write_audit; notify_revoked by
-- the revocation triggers of the rows they delete).
GRANT EXECUTE ON FUNCTION parley.write_audit(text, text, text, jsonb, uuid), parley.require_role(text),
  parley.current_member_role(), parley.notify_revoked(text, text[]) TO parley_purge;
GRANT UPDATE (purge_after) ON parley.tenants TO parley_app;  -- parley.delete_tenant sets it
-- `parley gdpr export` runs as the jobs role in the tenant's transaction: it reads the tenant's
-- trail (row-level security scopes it; the trail stays append-only).
GRANT SELECT ON parley.audit_log TO parley_jobs;
