-- Telegram inbound (pyapp/channels/telegram_inbound.py): the webhook finds its channel's tenant
-- (telegram_channel_tenant), checks the secret token, then as the server in that tenant:
-- accept_channel_update dedupes on update_id and says which conversation the topic is and which
-- member the Telegram user is linked to; the action itself runs as that member (actor kind
-- 'channel', sql/21_auth.sql) through the same functions the API calls (agent_reply,
-- claim_conversation, ...). Members link their Telegram user with a one-time code
-- (create_channel_link_code, then `/link CODE` in the group).

SELECT parley.apply_tenant_policies('parley.channel_updates');
SELECT parley.apply_tenant_policies('parley.channel_member_links');
SELECT parley.apply_tenant_policies('parley.channel_link_codes');
GRANT SELECT, INSERT, DELETE ON parley.channel_updates TO parley_app;
GRANT DELETE ON parley.channel_updates TO parley_jobs;
GRANT SELECT, INSERT, DELETE ON parley.channel_member_links, parley.channel_link_codes TO parley_app;
GRANT UPDATE (user_id, created_at) ON parley.channel_member_links TO parley_app;
-- begin_request (owned by parley_auth) checks a 'channel' actor's link.
GRANT SELECT ON parley.channel_member_links TO parley_auth;

CREATE OR REPLACE FUNCTION parley.telegram_channel_tenant(p_channel_id uuid) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT d.tenant_id FROM parley.outbox_destinations d
    JOIN parley.tenants t ON t.id = d.tenant_id AND t.deleted_at IS NULL
   WHERE d.id = p_channel_id AND d.kind = 'telegram' AND d.status <> 'disabled'
$$;
COMMENT ON FUNCTION parley.telegram_channel_tenant(uuid) IS
  'The webhook, before any tenant is known: the tenant of a Telegram channel (its id is in the URL Telegram calls); NULL when unknown. The caller then checks the channel''s secret token in that tenant.';
ALTER FUNCTION parley.telegram_channel_tenant(uuid) OWNER TO parley_auth;
REVOKE ALL ON FUNCTION parley.telegram_channel_tenant(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.telegram_channel_tenant(uuid) TO parley_app;

CREATE OR REPLACE FUNCTION parley.accept_channel_update(p_channel_id uuid, p_update_id bigint, p_chat_id text,
                                                       p_thread_ref text, p_external_user_id text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_dest parley.outbox_destinations;
  v_fresh boolean;
BEGIN
  SELECT * INTO v_dest FROM parley.outbox_destinations d WHERE d.tenant_id = v_tenant AND d.id = p_channel_id;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such channel.');
  END IF;
  INSERT INTO parley.channel_updates (tenant_id, destination_id, update_id)
  VALUES (v_tenant, p_channel_id, p_update_id) ON CONFLICT DO NOTHING
  RETURNING true INTO v_fresh;
  -- Telegram keeps an unconfirmed update 24 hours: older ones are never sent again.
  DELETE FROM parley.channel_updates u
   WHERE u.tenant_id = v_tenant AND u.received_at < now() - interval '2 days';
  RETURN jsonb_build_object(
    'duplicate', v_fresh IS NULL,
    'own_chat', p_chat_id = v_dest.target,
    'conversation_id', (SELECT t.conversation_id FROM parley.channel_threads t
                         WHERE t.tenant_id = v_tenant AND t.destination_id = p_channel_id
                           AND t.thread_ref = p_thread_ref AND p_chat_id = v_dest.target),
    'user_id', (SELECT l.user_id FROM parley.channel_member_links l
                 WHERE l.tenant_id = v_tenant AND l.kind = v_dest.kind AND l.external_user_id = p_external_user_id));
END $$;
COMMENT ON FUNCTION parley.accept_channel_update(uuid, bigint, text, text, text) IS
  'The server, per inbound update of a channel of the current tenant: record update_id (duplicate true when seen before: do nothing), and return whether it came from the channel''s own chat, the conversation whose thread it is in (NULL outside one) and the member the sender is linked to (NULL when not linked).';

CREATE OR REPLACE FUNCTION parley.create_channel_link_code(p_kind text DEFAULT 'telegram') RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_user uuid := parley.current_user_id();
  v_code text := upper(substr(replace(gen_random_uuid()::text, '-', ''), 1, 12));
BEGIN
  IF v_user IS NULL THEN
    PERFORM parley.raise_error(403, 'members_only', 'Only a signed-in member links a Telegram account.');
  END IF;
  IF p_kind IS DISTINCT FROM 'telegram' THEN
    PERFORM parley.raise_error(422, 'invalid_kind', 'Channels that link members: telegram.');
  END IF;
  DELETE FROM parley.channel_link_codes c
   WHERE c.tenant_id = parley.current_tenant_id() AND (c.user_id = v_user OR c.expires_at < now());
  INSERT INTO parley.channel_link_codes (tenant_id, code_hash, user_id, expires_at)
  VALUES (parley.current_tenant_id(), sha256(convert_to(v_code, 'UTF8')), v_user, now() + interval '10 minutes');
  RETURN v_code;
END $$;
COMMENT ON FUNCTION parley.create_channel_link_code(text) IS
  'A signed-in member: a one-time code (12 hex characters, 10 minutes, only its hash stored; a new one replaces the old) to send as `/link CODE` in the tenant''s Telegram group, which links the sender''s Telegram user to this member.';

CREATE OR REPLACE FUNCTION parley.link_channel_member(p_kind text, p_external_user_id text, p_code text)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_user uuid;
  v_live boolean;
BEGIN
  -- One use: the code is gone whether or not it was still valid.
  DELETE FROM parley.channel_link_codes c
   WHERE c.tenant_id = parley.current_tenant_id()
     AND c.code_hash = sha256(convert_to(upper(btrim(coalesce(p_code, ''))), 'UTF8'))
  RETURNING c.user_id, c.expires_at > now() INTO v_user, v_live;
  IF v_user IS NULL OR NOT v_live THEN
    RETURN NULL;
  END IF;
  INSERT INTO parley.channel_member_links (tenant_id, kind, external_user_id, user_id)
  VALUES (parley.current_tenant_id(), p_kind, p_external_user_id, v_user)
  ON CONFLICT (tenant_id, kind, external_user_id) DO UPDATE SET user_id = EXCLUDED.user_id, created_at = now();
  PERFORM parley.write_audit('channel_member.linked', 'member', v_user::text,
                             jsonb_build_object('kind', p_kind, 'external_user_id', p_external_user_id));
  RETURN v_user;
END $$;
COMMENT ON FUNCTION parley.link_channel_member(text, text, text) IS
  'The server, on `/link CODE` in a channel of the current tenant: use up the one-time code and link the sender (p_external_user_id) to the member who made it; returns that member, NULL for an unknown or expired code.';
