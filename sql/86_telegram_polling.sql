-- Telegram long polling (jobs/telegram_poll.py), for channels whose server has no public URL:
-- `parley jobs` leases each polling channel (one poller at a time across processes; a lease
-- that is not renewed expires), calls deleteWebhook once (getUpdates and a webhook exclude each
-- other), then getUpdates from next_offset and hands every update to the webhook's own handler
-- (pyapp/channels/telegram_updates.py: accept_channel_update dedupes on update_id), and moves
-- next_offset past what it handled. A channel is polling when it has a parley.channel_polls row
-- (set_telegram_inbound), webhook otherwise.

SELECT parley.apply_tenant_policies('parley.channel_polls');
GRANT SELECT, INSERT, DELETE ON parley.channel_polls TO parley_app;
GRANT UPDATE (next_offset, webhook_cleared, polled_at, last_error, leased_by, leased_until)
   ON parley.channel_polls TO parley_app;
-- The cross-tenant lease (owned by parley_auth, BYPASSRLS).
GRANT SELECT, UPDATE (leased_by, leased_until) ON parley.channel_polls TO parley_auth;

CREATE OR REPLACE FUNCTION parley.lease_channel_polls(p_worker text, p_limit int, p_lease_seconds int)
RETURNS TABLE (tenant_id uuid, destination_id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
  UPDATE parley.channel_polls p
     SET leased_by = p_worker, leased_until = now() + make_interval(secs => p_lease_seconds)
    FROM (SELECT c.tenant_id, c.destination_id FROM parley.channel_polls c
            JOIN parley.outbox_destinations d ON d.tenant_id = c.tenant_id AND d.id = c.destination_id
            JOIN parley.tenants t ON t.id = c.tenant_id AND t.deleted_at IS NULL
           WHERE d.status = 'active' AND (c.leased_until IS NULL OR c.leased_until < now())
           ORDER BY c.polled_at NULLS FIRST
           LIMIT p_limit
           FOR NO KEY UPDATE OF c SKIP LOCKED) pick
   WHERE p.tenant_id = pick.tenant_id AND p.destination_id = pick.destination_id
  RETURNING p.tenant_id, p.destination_id
$$;
COMMENT ON FUNCTION parley.lease_channel_polls(text, int, int) IS
  'Pollers (the server role in parley jobs): lease up to p_limit polling channels of any tenant whose destination is active and whose lease is free or expired, for p_lease_seconds, least recently polled first. Returns ids only; the poller then works in that tenant''s transaction.';

CREATE OR REPLACE FUNCTION parley.record_channel_poll(p_destination_id uuid, p_worker text, p_next_offset bigint,
                                                     p_webhook_cleared boolean, p_error text,
                                                     p_lease_seconds int)
RETURNS boolean
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.channel_polls p
     SET next_offset = greatest(p.next_offset, coalesce(p_next_offset, 0)),
         webhook_cleared = coalesce(p_webhook_cleared, p.webhook_cleared),
         polled_at = now(),
         last_error = left(p_error, 1000),
         leased_until = now() + make_interval(secs => p_lease_seconds)
   WHERE p.tenant_id = parley.current_tenant_id() AND p.destination_id = p_destination_id
     AND p.leased_by = p_worker AND p.leased_until >= now()
  RETURNING true
$$;
COMMENT ON FUNCTION parley.record_channel_poll(uuid, text, bigint, boolean, text, int) IS
  'Pollers, after a getUpdates round of a channel of the current tenant they lease: move next_offset forward (never back) past the updates handled, note whether the webhook is cleared and the round''s error (NULL: none), renew the lease. NULL when the lease was lost (stop polling it).';

CREATE OR REPLACE FUNCTION parley.release_channel_poll(p_destination_id uuid, p_worker text)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
  UPDATE parley.channel_polls p SET leased_by = NULL, leased_until = NULL
   WHERE p.tenant_id = parley.current_tenant_id() AND p.destination_id = p_destination_id AND p.leased_by = p_worker
$$;
COMMENT ON FUNCTION parley.release_channel_poll(uuid, text) IS
  'Pollers: give back a polling channel this worker leased (no-op when the lease was lost).';

CREATE OR REPLACE FUNCTION parley.set_telegram_inbound(p_id uuid, p_mode text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  IF parley.telegram_channel_json(p_id) IS NULL THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such Telegram channel.');
  END IF;
  IF p_mode = 'polling' THEN
    INSERT INTO parley.channel_polls (tenant_id, destination_id) VALUES (parley.current_tenant_id(), p_id)
    ON CONFLICT (tenant_id, destination_id) DO NOTHING;
  ELSIF p_mode = 'webhook' THEN
    DELETE FROM parley.channel_polls p WHERE p.tenant_id = parley.current_tenant_id() AND p.destination_id = p_id;
  ELSE
    PERFORM parley.raise_error(422, 'invalid_mode', 'Updates arrive by webhook or polling.');
  END IF;
  RETURN parley.telegram_channel_json(p_id);
END $$;
COMMENT ON FUNCTION parley.set_telegram_inbound(uuid, text) IS
  'Admins: how a Telegram channel of the current tenant receives its updates: ''polling'' (parley jobs calls getUpdates; for servers without a public URL) or ''webhook'' (Telegram calls the server). 404 unknown channel, 422 other modes.';

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
SELECT parley.secure_functions('parley_auth', '{parley_app}', 'parley.lease_channel_polls(text, int, int)');
