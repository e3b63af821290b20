-- Customer webhooks (Standard Webhooks): endpoints are outbox destinations of kind 'webhook'
-- with the event kinds they subscribe to; the drainer signs each delivery with the endpoint's
-- whsec_ secrets (sealed in parley.destination_secrets, sql/81_channels.sql) and posts it through
-- the SSRF guard. Failures retry per sql/80_outbox.sql; an endpoint failing for 5 days is paused
-- (auto-disabled) and the owners are told by e-mail through the outbox.

CREATE OR REPLACE FUNCTION parley.webhook_endpoint_json(p_id uuid) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object(
           'id', d.id, 'name', d.name, 'url', d.target, 'event_kinds', d.event_kinds, 'chatbot_id', d.chatbot_id,
           'status', d.status, 'paused_reason', d.paused_reason, 'paused_at', d.paused_at,
           'failing_since', d.failing_since, 'last_success_at', d.last_success_at, 'last_error', d.last_error,
           'created_at', d.created_at, 'updated_at', d.updated_at,
           'secrets', coalesce((SELECT jsonb_agg(jsonb_build_object('id', s.id, 'hint', s.hint, 'created_at', s.created_at,
                                                                   'expires_at', s.expires_at) ORDER BY s.created_at DESC)
                                  FROM parley.destination_secrets s
                                 WHERE s.tenant_id = d.tenant_id AND s.destination_id = d.id AND s.purpose = 'signing'
                                   AND (s.expires_at IS NULL OR s.expires_at > now())), '[]'))
    FROM parley.outbox_destinations d
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_id AND d.kind = 'webhook'
$$;
COMMENT ON FUNCTION parley.webhook_endpoint_json(uuid) IS
  'A webhook endpoint of the current tenant as the API shows it (its secrets only as hints and validity); NULL when unknown.';

CREATE OR REPLACE FUNCTION parley.check_webhook_fields(p_name text, p_url text, p_event_kinds text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF p_name IS NOT NULL AND (length(btrim(p_name)) NOT BETWEEN 1 AND 100) THEN
    PERFORM parley.raise_error(422, 'invalid_name', 'The name is 1 to 100 characters.');
  END IF;
  IF p_url IS NOT NULL AND (p_url !~* '^https?://[^/?#@\s]+' OR length(p_url) > 2048) THEN
    PERFORM parley.raise_error(422, 'invalid_url', 'The URL is an http(s) address of at most 2048 characters.');
  END IF;
  IF p_event_kinds IS NOT NULL AND (cardinality(p_event_kinds) = 0
                                    OR NOT p_event_kinds <@ parley.outbox_event_kinds()) THEN
    PERFORM parley.raise_error(422, 'invalid_event_kinds',
      'Subscribe to at least one of: ' || array_to_string(parley.outbox_event_kinds(), ', ') || '.');
  END IF;
END $$;
COMMENT ON FUNCTION parley.check_webhook_fields(text, text, text[]) IS
  'Validate webhook endpoint fields (NULL = not given): name 1..100, an http(s) URL without user info up to 2048 characters, a non-empty subset of parley.outbox_event_kinds(); 422 otherwise. The address itself is vetted by the server''s SSRF guard.';

CREATE OR REPLACE FUNCTION parley.create_webhook_endpoint(p_id uuid, p_name text, p_url text, p_event_kinds text[],
                                                         p_chatbot_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  PERFORM parley.check_webhook_fields(p_name, p_url, p_event_kinds);
  IF p_chatbot_id IS NOT NULL THEN
    PERFORM parley.require_live_chatbot(p_chatbot_id);
  END IF;
  PERFORM parley.lock_limit('webhook_endpoints');
  IF (SELECT count(*) FROM parley.outbox_destinations d
       WHERE d.tenant_id = parley.current_tenant_id() AND d.kind = 'webhook') >= 20 THEN
    PERFORM parley.raise_error(409, 'too_many_endpoints', 'A workspace has at most 20 webhook endpoints.');
  END IF;
  INSERT INTO parley.outbox_destinations (tenant_id, id, kind, name, target, event_kinds, chatbot_id, pause_after)
  VALUES (parley.current_tenant_id(), p_id, 'webhook', btrim(p_name), p_url, p_event_kinds, p_chatbot_id,
          interval '5 days');
  PERFORM parley.write_audit('webhook.created', 'webhook', p_id::text, jsonb_build_object('url', p_url));
  RETURN parley.webhook_endpoint_json(p_id);
END $$;
COMMENT ON FUNCTION parley.create_webhook_endpoint(uuid, text, text, text[], uuid) IS
  'Admins: a webhook endpoint for the current tenant (id chosen by the server, which seals its first secret with it), for every chatbot or one live chatbot (404 otherwise); at most 20 per workspace; paused after 5 days of failures. Audited without secrets.';

CREATE OR REPLACE FUNCTION parley.update_webhook_endpoint(p_id uuid, p_name text, p_url text, p_event_kinds text[],
                                                         p_enabled boolean)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  PERFORM parley.check_webhook_fields(p_name, p_url, p_event_kinds);
  UPDATE parley.outbox_destinations d
     SET name = coalesce(btrim(p_name), d.name), target = coalesce(p_url, d.target),
         event_kinds = coalesce(p_event_kinds, d.event_kinds),
         status = CASE WHEN p_enabled IS FALSE THEN 'disabled'
                       WHEN p_enabled IS TRUE AND d.status = 'disabled' THEN 'active' ELSE d.status END,
         updated_at = now()
   WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_id AND d.kind = 'webhook';
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such webhook endpoint.');
  END IF;
  PERFORM parley.write_audit('webhook.updated', 'webhook', p_id::text,
                             jsonb_strip_nulls(jsonb_build_object('url', p_url, 'enabled', p_enabled)));
  RETURN parley.webhook_endpoint_json(p_id);
END $$;
COMMENT ON FUNCTION parley.update_webhook_endpoint(uuid, text, text, text[], boolean) IS
  'Admins: change an endpoint''s name, URL, event kinds (NULL keeps) or enable/disable it (a disabled endpoint gets no new deliveries); 404 for unknown ids.';
GRANT UPDATE (name, target, event_kinds) ON parley.outbox_destinations TO parley_app;
GRANT INSERT ON parley.outbox_destinations TO parley_app;

CREATE OR REPLACE FUNCTION parley.send_test_webhook(p_id uuid) RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  IF NOT EXISTS (SELECT 1 FROM parley.outbox_destinations d
                  WHERE d.tenant_id = parley.current_tenant_id() AND d.id = p_id AND d.kind = 'webhook') THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such webhook endpoint.');
  END IF;
  RETURN parley.enqueue_delivery(p_id, 'webhook.test', jsonb_build_object(
    'type', 'webhook.test', 'timestamp', now(),
    'data', jsonb_build_object('endpoint_id', p_id, 'message', 'A test event from Parley.')));
END $$;
COMMENT ON FUNCTION parley.send_test_webhook(uuid) IS
  'Admins: queue a webhook.test delivery to an endpoint of the current tenant (signed and retried like any other); returns the delivery id.';
