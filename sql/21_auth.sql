-- Request authorisation: the first statement of every tenant transaction.

CREATE OR REPLACE FUNCTION parley.role_rank(p_role text) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE p_role WHEN 'owner' THEN 3 WHEN 'admin' THEN 2 WHEN 'agent' THEN 1
                         WHEN 'visitor' THEN 0 ELSE -1 END $$;
COMMENT ON FUNCTION parley.role_rank(text) IS 'Order of roles for route gates: visitor < agent < admin < owner.';

CREATE OR REPLACE FUNCTION parley.begin_request(
  p_tenant_id uuid, p_actor_kind text, p_actor_id text, p_session_id uuid,
  p_ip text, p_request_id text, p_min_role text DEFAULT 'agent')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_role text;
  v_user uuid;
  v_live boolean;
  v_suspended boolean;
  v_require_sso boolean;
BEGIN
  IF p_tenant_id IS NULL THEN
    PERFORM parley.raise_error(401, 'unauthenticated', 'No tenant in the credentials.');
  END IF;
  PERFORM set_config('app.tenant_id', p_tenant_id::text, true);
  PERFORM set_config('app.actor_kind', p_actor_kind, true);
  PERFORM set_config('app.actor_id', coalesce(p_actor_id, ''), true);
  PERFORM set_config('app.ip', coalesce(p_ip, ''), true);
  PERFORM set_config('app.request_id', coalesce(p_request_id, ''), true);
  PERFORM set_config('app.user_id', '', true);
  -- One look at the tenant row. A soft-deleted workspace is gone for everyone but the jobs
  -- process (which purges it); one suspended by staff keeps its data, and only staff, the
  -- server and jobs reach it.
  SELECT t.deleted_at IS NULL, t.suspended_at IS NOT NULL, t.require_sso INTO v_live, v_suspended, v_require_sso
    FROM parley.tenants t WHERE t.id = p_tenant_id;
  IF p_actor_kind <> 'system' AND v_live IS NOT TRUE THEN
    PERFORM parley.raise_error(404, 'tenant_not_found', 'This workspace does not exist or was deleted.');
  END IF;
  IF v_suspended AND p_actor_kind IN ('user', 'api_key', 'visitor') THEN
    PERFORM parley.raise_error(403, 'tenant_suspended', 'This workspace is suspended; contact the operator.');
  END IF;

  IF p_actor_kind = 'user' THEN
    v_user := p_actor_id::uuid;
    -- The access token is only as alive as its session (refresh-token family).
    IF NOT EXISTS (SELECT 1 FROM parley.refresh_tokens r
                    WHERE r.family_id = p_session_id AND r.user_id = v_user
                      AND r.revoked_at IS NULL AND r.expires_at > now()) THEN
      PERFORM parley.raise_error(401, 'session_revoked', 'The session has ended; sign in again.');
    END IF;
    SELECT m.role INTO v_role FROM parley.members m
     WHERE m.tenant_id = p_tenant_id AND m.user_id = v_user;
    IF v_role IS NULL THEN
      PERFORM parley.raise_error(403, 'not_a_member', 'You are not a member of this workspace.');
    END IF;
    -- A workspace that requires single sign-on admits only sessions an identity provider opened.
    IF v_require_sso AND NOT parley.is_sso_session(p_session_id) THEN
      PERFORM parley.raise_error(403, 'sso_required',
        'This workspace requires single sign-on: sign in with your identity provider.');
    END IF;
    PERFORM set_config('app.user_id', v_user::text, true);
    PERFORM set_config('app.session_id', p_session_id::text, true);
  ELSIF p_actor_kind = 'api_key' THEN
    IF NOT EXISTS (SELECT 1 FROM parley.api_keys k
                    WHERE k.tenant_id = p_tenant_id AND k.id = p_actor_id::uuid
                      AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())) THEN
      PERFORM parley.raise_error(401, 'invalid_api_key', 'The API key is revoked or expired.');
    END IF;
    v_role := 'admin';
    -- Requests per minute per key (429 + Retry-After), in the tenant's own rate windows.
    PERFORM parley.hit_rate_limit('api_key', p_actor_id,
      (SELECT l.api_requests_per_min FROM parley.effective_limits(p_tenant_id) l));
  ELSIF p_actor_kind = 'visitor' THEN
    -- actor_id is the visitor's conversation id (from the signed widget token); SQL that
    -- touches a conversation checks it against parley.current_actor_id().
    v_role := 'visitor';
  ELSIF p_actor_kind = 'channel' AND session_user = 'parley_app' THEN
    -- A member acting from a channel (Telegram): actor_id is the user, who must be a member
    -- linked to a channel user of this tenant (sql/85_telegram_inbound.sql); the server has
    -- checked the channel's secret token. Never reachable from a client credential.
    v_user := p_actor_id::uuid;
    SELECT m.role INTO v_role FROM parley.members m
     WHERE m.tenant_id = p_tenant_id AND m.user_id = v_user
       AND EXISTS (SELECT 1 FROM parley.channel_member_links l WHERE l.tenant_id = p_tenant_id AND l.user_id = v_user);
    IF v_role IS NULL THEN
      PERFORM parley.raise_error(403, 'not_linked', 'This channel user is not linked to a member.');
    END IF;
    PERFORM set_config('app.user_id', v_user::text, true);
  ELSIF p_actor_kind = 'service' AND session_user = 'parley_app' THEN
    -- The server acting on its own behalf inside one tenant: the relay reading events,
    -- the assistant storing a bot reply. Never reachable from a client credential.
    v_role := 'agent';
  ELSIF p_actor_kind = 'staff' AND session_user = 'parley_app' THEN
    -- An operator of the installation acting inside this tenant (sql/92_staff.sql).
    IF NOT parley.is_staff(p_actor_id::uuid, p_session_id) THEN
      PERFORM parley.raise_error(403, 'not_staff', 'This needs an operator of this installation.');
    END IF;
    PERFORM set_config('app.session_id', p_session_id::text, true);
    v_role := 'owner';
  ELSIF p_actor_kind = 'system' AND session_user IN ('parley_jobs') THEN
    v_role := 'owner';
  ELSE
    PERFORM parley.raise_error(401, 'unauthenticated', 'Unknown kind of actor.');
  END IF;

  IF parley.role_rank(v_role) < parley.role_rank(p_min_role) THEN
    PERFORM parley.raise_error(403, 'forbidden', format('This needs the %s role.', p_min_role));
  END IF;
  PERFORM set_config('app.role', v_role, true);
  RETURN v_role;
END $$;
COMMENT ON FUNCTION parley.begin_request(uuid, text, text, uuid, text, text, text) IS
  'First call of every tenant transaction: sets app.tenant_id/actor/ip/request_id locally, checks the user''s session and membership (or the API key) and the route''s minimum role; returns the role.';
ALTER FUNCTION parley.begin_request(uuid, text, text, uuid, text, text, text) OWNER TO parley_auth;
REVOKE ALL ON FUNCTION parley.begin_request(uuid, text, text, uuid, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.begin_request(uuid, text, text, uuid, text, text, text) TO parley_app, parley_jobs;

CREATE OR REPLACE FUNCTION parley.authenticate_api_key(p_key_hash bytea)
RETURNS TABLE (tenant_id uuid, key_id uuid, scopes text[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  RETURN QUERY
    UPDATE parley.api_keys k
       SET last_used_at = now()
     WHERE k.key_hash = p_key_hash AND k.revoked_at IS NULL
       AND (k.expires_at IS NULL OR k.expires_at > now())
       AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')
       AND EXISTS (SELECT 1 FROM parley.tenants t WHERE t.id = k.tenant_id AND t.deleted_at IS NULL)
    RETURNING k.tenant_id, k.id, k.scopes;
  IF NOT FOUND THEN
    RETURN QUERY
      SELECT k.tenant_id, k.id, k.scopes FROM parley.api_keys k
       WHERE k.key_hash = p_key_hash AND k.revoked_at IS NULL
         AND (k.expires_at IS NULL OR k.expires_at > now())
         AND EXISTS (SELECT 1 FROM parley.tenants t WHERE t.id = k.tenant_id AND t.deleted_at IS NULL);
  END IF;
END $$;
COMMENT ON FUNCTION parley.authenticate_api_key(bytea) IS
  'Look up a live API key by its SHA-256 across tenants (the tenant is not known yet); touches last_used_at at most once a minute. Empty when revoked, expired or unknown.';
ALTER FUNCTION parley.authenticate_api_key(bytea) OWNER TO parley_auth;
REVOKE ALL ON FUNCTION parley.authenticate_api_key(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.authenticate_api_key(bytea) TO parley_app;
