-- Console rules: canned replies and per-agent read positions (tables in
-- migrations/0005.console.sql). Both are plain tenant-owned tables under the standard
-- tenant policies; the writes go through the functions below so they are audited and
-- validated in one place.

SELECT parley.apply_tenant_policies('parley.canned_replies');
SELECT parley.apply_tenant_policies('parley.conversation_reads');

GRANT SELECT, INSERT, UPDATE, DELETE ON parley.canned_replies TO parley_app;
GRANT SELECT, INSERT, UPDATE ON parley.conversation_reads TO parley_app;

-- Saving a canned reply: create (p_id NULL) or update; the shortcut is unique per tenant.
CREATE OR REPLACE FUNCTION parley.save_canned_reply(p_id uuid, p_shortcut text, p_body text)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_id uuid;
  v_shortcut text := lower(btrim(coalesce(p_shortcut, '')));
  v_body text := btrim(coalesce(p_body, ''));
BEGIN
  IF v_shortcut !~ '^[a-z0-9][a-z0-9_-]{0,31}$' THEN
    PERFORM parley.raise_error(422, 'invalid_shortcut',
      'Use 1-32 lower-case letters, digits, "-" or "_", starting with a letter or digit.');
  END IF;
  IF length(v_body) NOT BETWEEN 1 AND parley.message_body_max('agent') THEN
    PERFORM parley.raise_error(422, 'invalid_body',
      format('The reply must be 1 to %s characters.', parley.message_body_max('agent')));
  END IF;
  PERFORM parley.check_text(v_body, 'invalid_text', 'A canned reply');
  IF EXISTS (SELECT 1 FROM parley.canned_replies c
              WHERE c.shortcut = v_shortcut AND c.id IS DISTINCT FROM p_id) THEN
    PERFORM parley.raise_error(409, 'shortcut_taken', format('/%s is already used by another reply.', v_shortcut));
  END IF;
  IF p_id IS NULL THEN
    INSERT INTO parley.canned_replies (tenant_id, shortcut, body, created_by)
    VALUES (parley.current_tenant_id(), v_shortcut, v_body, parley.current_user_id())
    RETURNING id INTO v_id;
    PERFORM parley.write_audit('canned_reply.insert', 'canned_reply', v_id::text,
                               jsonb_build_object('shortcut', v_shortcut));
  ELSE
    UPDATE parley.canned_replies SET shortcut = v_shortcut, body = v_body, updated_at = now()
     WHERE id = p_id RETURNING id INTO v_id;
    IF v_id IS NULL THEN
      PERFORM parley.raise_error(404, 'not_found', 'No such canned reply.');
    END IF;
    PERFORM parley.write_audit('canned_reply.update', 'canned_reply', v_id::text,
                               jsonb_build_object('shortcut', v_shortcut));
  END IF;
  RETURN v_id;
END $$;
COMMENT ON FUNCTION parley.save_canned_reply(uuid, text, text) IS
  'Create (p_id NULL) or update a canned reply of the current tenant; shortcut normalised to lower case and unique per tenant (409 shortcut_taken); the body is an agent message (message_body_max, the text rule); audited.';

CREATE OR REPLACE FUNCTION parley.delete_canned_reply(p_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_shortcut text;
BEGIN
  DELETE FROM parley.canned_replies WHERE id = p_id RETURNING shortcut INTO v_shortcut;
  IF v_shortcut IS NULL THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such canned reply.');
  END IF;
  PERFORM parley.write_audit('canned_reply.delete', 'canned_reply', p_id::text,
                             jsonb_build_object('shortcut', v_shortcut));
END $$;
COMMENT ON FUNCTION parley.delete_canned_reply(uuid) IS 'Delete one canned reply of the current tenant; audited.';

-- Read position: only ever moves forward, one row per (signed-in agent, conversation).
CREATE OR REPLACE FUNCTION parley.mark_conversation_read(p_conversation_id uuid, p_message_id bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_user uuid := parley.current_user_id();
  v_upto bigint;
BEGIN
  IF v_user IS NULL THEN
    RETURN NULL;  -- API keys have no inbox
  END IF;
  PERFORM parley.check_conversation_access(p_conversation_id);
  INSERT INTO parley.conversation_reads AS r (tenant_id, user_id, conversation_id, last_read_message_id)
  VALUES (parley.current_tenant_id(), v_user, p_conversation_id, greatest(coalesce(p_message_id, 0), 0))
  ON CONFLICT (tenant_id, user_id, conversation_id) DO UPDATE
    SET last_read_message_id = greatest(r.last_read_message_id, EXCLUDED.last_read_message_id),
        read_at = now()
  RETURNING last_read_message_id INTO v_upto;
  RETURN v_upto;
END $$;
COMMENT ON FUNCTION parley.mark_conversation_read(uuid, bigint) IS
  'Move the signed-in agent''s read position in a conversation forward to p_message_id (never back); returns the position. No-op for API keys.';

-- Owners and EXECUTE grants of the functions above (parley.secure_functions, 05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_app}', 'parley.save_canned_reply(uuid, text, text)',
  'parley.delete_canned_reply(uuid)', 'parley.mark_conversation_read(uuid, bigint)');
