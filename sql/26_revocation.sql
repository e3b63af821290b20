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

CREATE OR REPLACE FUNCTION parley.t_sessions_revoked() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = ''
AS $$
BEGIN
  PERFORM parley.notify_revoked('session', array_agg(DISTINCT n.family_id::text))
     FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE o.revoked_at IS NULL AND n.revoked_at IS NOT NULL;
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.t_sessions_revoked() IS
  'Trigger (statement level): sessions (refresh-token families) that this statement revoked → NOTIFY parley_revoked session:<ids>.';

CREATE OR REPLACE FUNCTION parley.t_members_removed() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = ''
AS $$
DECLARE
  v_row record;
BEGIN
  FOR v_row IN SELECT o.tenant_id, array_agg(DISTINCT o.user_id::text) AS ids FROM old_rows o GROUP BY o.tenant_id
  LOOP
    PERFORM parley.notify_revoked('member:' || v_row.tenant_id::text, v_row.ids);
  END LOOP;
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.t_members_removed() IS
  'Trigger (statement level): memberships this statement deleted → NOTIFY parley_revoked member:<tenant>:<user ids>.';

CREATE OR REPLACE FUNCTION parley.t_api_keys_revoked() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = ''
AS $$
DECLARE
  v_row record;
BEGIN
  IF TG_OP = 'DELETE' THEN
    FOR v_row IN SELECT o.tenant_id, array_agg(o.id::text) AS ids FROM old_rows o WHERE o.revoked_at IS NULL
                  GROUP BY o.tenant_id LOOP
      PERFORM parley.notify_revoked('key:' || v_row.tenant_id::text, v_row.ids);
    END LOOP;
  ELSE
    FOR v_row IN SELECT n.tenant_id, array_agg(n.id::text) AS ids
                   FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
                  WHERE o.revoked_at IS NULL AND n.revoked_at IS NOT NULL GROUP BY n.tenant_id LOOP
      PERFORM parley.notify_revoked('key:' || v_row.tenant_id::text, v_row.ids);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.t_api_keys_revoked() IS
  'Trigger (statement level): API keys this statement revoked or deleted → NOTIFY parley_revoked key:<tenant>:<key ids>.';

DROP TRIGGER IF EXISTS t90_notify_revoked ON parley.refresh_tokens;
CREATE TRIGGER t90_notify_revoked AFTER UPDATE ON parley.refresh_tokens
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION parley.t_sessions_revoked();

DROP TRIGGER IF EXISTS t90_notify_removed ON parley.members;
CREATE TRIGGER t90_notify_removed AFTER DELETE ON parley.members
  REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION parley.t_members_removed();

DROP TRIGGER IF EXISTS t90_notify_revoked ON parley.api_keys;
CREATE TRIGGER t90_notify_revoked AFTER UPDATE ON parley.api_keys
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION parley.t_api_keys_revoked();
DROP TRIGGER IF EXISTS t91_notify_deleted ON parley.api_keys;
CREATE TRIGGER t91_notify_deleted AFTER DELETE ON parley.api_keys
  REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION parley.t_api_keys_revoked();

REVOKE ALL ON FUNCTION parley.notify_revoked(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.notify_revoked(text, text[]) TO parley_app, parley_jobs, parley_auth;
REVOKE ALL ON FUNCTION parley.t_sessions_revoked(), parley.t_members_removed(), parley.t_api_keys_revoked() FROM PUBLIC;
