-- Revocation reaches live streams at once. A removed member, a revoked API key or an ended
-- session must stop receiving events now, not at the stream's next credential re-check (60 s):
-- these triggers NOTIFY channel `parley_revoked`, every server's relay (one LISTEN connection
-- per process, pyapp/realtime/relay.py) closes the matching agent sockets and SSE streams.
-- Payloads carry ids only, one NOTIFY per statement and kind (≤ 150 ids each, under the 8000-byte
-- limit); revocations are rare, so the commit-time NOTIFY lock costs nothing on the chat path.
--   session:<family_id>[,<family_id>...]       refresh-token families revoked (logout, reuse, reset)
--   member:<tenant_id>:<user_id>[,<user_id>...] memberships deleted (removed, left, tenant deleted)
--   key:<tenant_id>:<key_id>[,<key_id>...]      API keys revoked or deleted
-- A notice missed while a relay was reconnecting is covered by that relay re-checking every
-- stream's credential after the reconnect, and by the periodic re-check.

CREATE OR REPLACE FUNCTION parley.notify_revoked(p_kind text, p_ids text[]) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = ''
AS $$
DECLARE
  v_i int := 1;
BEGIN
  WHILE v_i <= coalesce(cardinality(p_ids), 0) LOOP
    PERFORM pg_catalog.pg_notify('parley_revoked',
      p_kind || ':' || array_to_string(p_ids[v_i:v_i + 149], ','));
    v_i := v_i + 150;
  END LOOP;
END $$;
COMMENT ON FUNCTION parley.notify_revoked(text, text[]) IS
  'Internal to the revocation triggers: NOTIFY parley_revoked with <kind>:<ids>, 150 ids per notice. Channel and payloads: sql/26_revocation.sql.';

-- One trigger function for the three kinds. Its arguments: the notice kind, the column whose
-- ids the notice carries, and (optional) the column that scopes it (kind:<scope>:<ids>).
-- An UPDATE notifies the rows whose revoked_at it set; a DELETE the rows still live when deleted.
CREATE OR REPLACE FUNCTION parley.t_notify_revoked() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = ''
AS $$
DECLARE
  v_ended jsonb[];
  v_row record;
BEGIN
  IF TG_OP = 'DELETE' THEN
    SELECT array_agg(to_jsonb(o)) INTO v_ended FROM old_rows o WHERE to_jsonb(o) ->> 'revoked_at' IS NULL;
  ELSE
    SELECT array_agg(to_jsonb(n)) INTO v_ended
      FROM new_rows n JOIN old_rows o ON o.id = n.id
     WHERE o.revoked_at IS NULL AND n.revoked_at IS NOT NULL;
  END IF;
  FOR v_row IN
    SELECT concat_ws(':', TG_ARGV[0], e ->> TG_ARGV[2]) AS kind, array_agg(DISTINCT e ->> TG_ARGV[1]) AS ids
      FROM unnest(v_ended) e GROUP BY 1
  LOOP
    PERFORM parley.notify_revoked(v_row.kind, v_row.ids);
  END LOOP;
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.t_notify_revoked() IS
  'Trigger (statement level, arguments: kind, id column[, scope column]): the rows this statement revoked (UPDATE setting revoked_at) or deleted while live → NOTIFY parley_revoked <kind>[:<scope>]:<ids>.';

DROP FUNCTION IF EXISTS parley.t_sessions_revoked() CASCADE;
DROP FUNCTION IF EXISTS parley.t_members_removed() CASCADE;
DROP FUNCTION IF EXISTS parley.t_api_keys_revoked() CASCADE;

SELECT parley.ensure_trigger('parley.refresh_tokens', 't90_notify_revoked', 'AFTER UPDATE',
  $$REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION parley.t_notify_revoked('session', 'family_id')$$);

SELECT parley.ensure_trigger('parley.members', 't90_notify_removed', 'AFTER DELETE',
  $$REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION parley.t_notify_revoked('member', 'user_id', 'tenant_id')$$);

SELECT parley.ensure_trigger('parley.api_keys', 't90_notify_revoked', 'AFTER UPDATE',
  $$REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION parley.t_notify_revoked('key', 'id', 'tenant_id')$$);
SELECT parley.ensure_trigger('parley.api_keys', 't91_notify_deleted', 'AFTER DELETE',
  $$REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION parley.t_notify_revoked('key', 'id', 'tenant_id')$$);

SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs, parley_auth}', 'parley.notify_revoked(text, text[])');
SELECT parley.secure_functions(NULL, NULL, 'parley.t_notify_revoked()');
