-- Sessions: sign-up, sign-in, refresh-token rotation, switching workspace, password resets,
-- and pruning what they leave behind. Members and invites: 23_members.sql; API keys:
-- 24_api_keys.sql; tenant settings and deletion: 25_tenant_settings.sql.
--
-- Two kinds of functions live here:
--  * SECURITY DEFINER, owned by parley_auth (BYPASSRLS), for the steps that happen before a
--    tenant is known or that cross tenants for one person (sign-in, sessions, accepting an
--    invite, the list of a person's workspaces). Each filters explicitly by the user or token.
--  * SECURITY INVOKER, run by parley_app inside parley.begin_request's tenant transaction, so
--    row-level security confines them to the current tenant.
-- Tokens (refresh, invite, reset) and API keys are generated in Python; only their SHA-256
-- reaches the database. Passwords arrive already hashed (argon2id).

---------------------------------------------------------------------------------------------
-- Request context for the tenant-less auth transactions
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.begin_auth_request(
  p_ip text, p_request_id text, p_user_id uuid DEFAULT NULL, p_session_id uuid DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  PERFORM set_config('app.tenant_id', '', true);
  PERFORM set_config('app.role', '', true);
  PERFORM set_config('app.ip', coalesce(p_ip, ''), true);
  PERFORM set_config('app.request_id', coalesce(p_request_id, ''), true);
  PERFORM set_config('app.user_id', '', true);
  PERFORM set_config('app.session_id', '', true);
  PERFORM set_config('app.actor_kind', '', true);
  PERFORM set_config('app.actor_id', '', true);
  IF p_user_id IS NOT NULL THEN
    -- Same liveness rule as begin_request: the access token lives only as long as its session.
    IF NOT EXISTS (SELECT 1 FROM parley.refresh_tokens r
                    WHERE r.family_id = p_session_id AND r.user_id = p_user_id
                      AND r.revoked_at IS NULL AND r.expires_at > now()) THEN
      PERFORM parley.raise_error(401, 'session_revoked', 'The session has ended; sign in again.');
    END IF;
    PERFORM parley.act_as_user(p_user_id);
    PERFORM set_config('app.session_id', p_session_id::text, true);
  END IF;
END $$;
COMMENT ON FUNCTION parley.begin_auth_request(text, text, uuid, uuid) IS
  'First call of every tenant-less account transaction (sign-up, sign-in, refresh, switch, invite acceptance): sets ip and request id locally and, for a signed-in person, checks the session is alive and sets app.user_id/app.session_id.';

-- Internal: the person acting, for the audit trail of the definer functions below.
CREATE OR REPLACE FUNCTION parley.act_as_user(p_user_id uuid) RETURNS void
LANGUAGE sql VOLATILE
AS $$
  SELECT set_config('app.actor_kind', 'user', true), set_config('app.actor_id', p_user_id::text, true),
         set_config('app.user_id', p_user_id::text, true);
$$;
COMMENT ON FUNCTION parley.act_as_user(uuid) IS
  'Internal to the auth functions: record the given user as the actor of this transaction (audit trail, current_user_id()).';

CREATE OR REPLACE FUNCTION parley.current_session_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.session_id', true), '')::uuid $$;
COMMENT ON FUNCTION parley.current_session_id() IS
  'Session (refresh-token family) of the signed-in person in a tenant-less account transaction, or NULL.';

CREATE OR REPLACE FUNCTION parley.require_signed_in() RETURNS uuid
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_user uuid := parley.current_user_id();
BEGIN
  IF v_user IS NULL THEN
    PERFORM parley.raise_error(401, 'unauthenticated', 'Sign in first.');
  END IF;
  RETURN v_user;
END $$;
COMMENT ON FUNCTION parley.require_signed_in() IS
  'Internal: the signed-in person of this account transaction; 401 unauthenticated when there is none.';

---------------------------------------------------------------------------------------------
-- Internal helpers of the definer functions (owned by parley_auth, executable by nobody else)
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.tenant_json(p_tenant_id uuid, p_user_id uuid) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object('id', t.id, 'slug', t.slug, 'name', t.name, 'plan', t.plan,
                            'role', m.role, 'created_at', t.created_at)
    FROM parley.tenants t JOIN parley.members m ON m.tenant_id = t.id AND m.user_id = p_user_id
   WHERE t.id = p_tenant_id AND t.deleted_at IS NULL
$$;
COMMENT ON FUNCTION parley.tenant_json(uuid, uuid) IS
  'Internal: a live workspace as the client sees it, with the given member''s role; NULL when not a member or deleted.';

CREATE OR REPLACE FUNCTION parley.user_json(p_user_id uuid) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object('id', u.id, 'email', u.email, 'name', u.name,
                            'email_verified_at', u.email_verified_at, 'created_at', u.created_at)
    FROM parley.users u WHERE u.id = p_user_id
$$;
COMMENT ON FUNCTION parley.user_json(uuid) IS 'Internal: a person as the client sees them (never the password hash or lock state).';

-- How an address names an account, the rule of the unique index users__lower_email_idx.
CREATE OR REPLACE FUNCTION parley.user_by_email(p_email text) RETURNS uuid
LANGUAGE sql STABLE
AS $$ SELECT u.id FROM parley.users u WHERE lower(u.email) = lower(btrim(p_email)) $$;
COMMENT ON FUNCTION parley.user_by_email(text) IS
  'The account an e-mail address names, case-insensitively and trimmed (at most one: users__lower_email_idx), among the accounts the caller may see; NULL when none.';

CREATE OR REPLACE FUNCTION parley.default_tenant_of(p_user_id uuid, p_preferred uuid) RETURNS uuid
LANGUAGE sql STABLE
AS $$
  SELECT m.tenant_id
    FROM parley.members m
    JOIN parley.tenants t ON t.id = m.tenant_id AND t.deleted_at IS NULL
    JOIN parley.users u ON u.id = m.user_id
   WHERE m.user_id = p_user_id
   ORDER BY (m.tenant_id = p_preferred) DESC NULLS LAST,
            (m.tenant_id = u.last_tenant_id) DESC NULLS LAST,
            m.created_at, m.tenant_id
   LIMIT 1
$$;
COMMENT ON FUNCTION parley.default_tenant_of(uuid, uuid) IS
  'Internal: the workspace a session lands in: the preferred one if still a member, else the last used, else the oldest membership.';

CREATE OR REPLACE FUNCTION parley.session_json(p_user_id uuid, p_tenant_id uuid, p_session_id uuid) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object('status', 'ok', 'session_id', p_session_id,
                            'user', parley.user_json(p_user_id),
                            'tenant', parley.tenant_json(p_tenant_id, p_user_id))
$$;
COMMENT ON FUNCTION parley.session_json(uuid, uuid, uuid) IS
  'Internal: what the server needs to mint an access token and answer a sign-in: session id, user, workspace.';

DROP FUNCTION IF EXISTS parley.start_session(uuid, bytea, int, uuid);
CREATE OR REPLACE FUNCTION parley.open_session(
  p_user_id uuid, p_refresh_hash bytea, p_refresh_ttl int, p_tenant_id uuid DEFAULT NULL,
  p_sso_issuer text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_family uuid := gen_random_uuid();
  v_tenant uuid := parley.default_tenant_of(p_user_id, p_tenant_id);
BEGIN
  INSERT INTO parley.refresh_tokens (family_id, user_id, token_hash, expires_at, tenant_id)
  VALUES (v_family, p_user_id, p_refresh_hash, now() + make_interval(secs => p_refresh_ttl), v_tenant);
  IF v_tenant IS NOT NULL THEN
    UPDATE parley.users SET last_tenant_id = v_tenant WHERE id = p_user_id;
  END IF;
  IF p_sso_issuer IS NOT NULL THEN
    INSERT INTO parley.sso_sessions (family_id, user_id, issuer) VALUES (v_family, p_user_id, p_sso_issuer);
  END IF;
  RETURN parley.session_json(p_user_id, v_tenant, v_family);
END $$;
COMMENT ON FUNCTION parley.open_session(uuid, bytea, int, uuid, text) IS
  'Internal: open a session (a new refresh-token family) for a person who just proved who they are, in p_tenant_id if they are a member of it, else their default workspace (default_tenant_of); with p_sso_issuer it is marked as opened by that identity provider (sso_sessions). Returns session_json (session_id = the access token''s sid).';

CREATE OR REPLACE FUNCTION parley.audit_for_user(
  p_user_id uuid, p_action text, p_details jsonb DEFAULT '{}') RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid;
BEGIN
  -- A person is global; their security events belong to every workspace they are in.
  FOR v_tenant IN
    SELECT m.tenant_id FROM parley.members m JOIN parley.tenants t ON t.id = m.tenant_id
     WHERE m.user_id = p_user_id AND t.deleted_at IS NULL
  LOOP
    PERFORM parley.write_audit(p_action, 'user', p_user_id::text, p_details, v_tenant);
  END LOOP;
END $$;
COMMENT ON FUNCTION parley.audit_for_user(uuid, text, jsonb) IS
  'Internal: write one audit row per live workspace of the person (sign-ins, password resets, refresh reuse).';

DROP FUNCTION IF EXISTS parley.revoke_user_sessions(uuid);
CREATE OR REPLACE FUNCTION parley.end_sessions(p_user_id uuid, p_families uuid[] DEFAULT NULL, p_keep uuid DEFAULT NULL)
RETURNS int
LANGUAGE sql VOLATILE
AS $$
  WITH ended AS (
    UPDATE parley.refresh_tokens SET revoked_at = now()
     WHERE user_id = p_user_id AND revoked_at IS NULL
       AND (p_families IS NULL OR family_id = ANY (p_families)) AND family_id IS DISTINCT FROM p_keep
    RETURNING family_id)
  SELECT count(DISTINCT family_id)::int FROM ended
$$;
COMMENT ON FUNCTION parley.end_sessions(uuid, uuid[], uuid) IS
  'Internal, the one way a session ends: revoke the live refresh tokens of a person''s sessions (all of them, or those of p_families; never p_keep); returns how many sessions ended. Their access tokens stop at once (begin_request checks the family) and their streams close (26_revocation.sql).';

CREATE OR REPLACE FUNCTION parley.throttle_auth_attempt() RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_ip inet := parley.current_request_ip();
  v_attempts int;
BEGIN
  IF v_ip IS NULL THEN
    RETURN;  -- no address (unix socket): nothing to key the throttle on
  END IF;
  -- One-minute buckets summed over a sliding 15 minutes: more than 20 attempts per address
  -- are refused. The refused attempt's increment rolls back with the error, so a throttled
  -- address does not dig itself deeper.
  INSERT INTO parley.login_throttle AS t (ip, window_start, attempts)
  VALUES (v_ip, date_trunc('minute', now()), 1)
  ON CONFLICT (ip, window_start) DO UPDATE SET attempts = t.attempts + 1;
  SELECT sum(t.attempts) INTO v_attempts FROM parley.login_throttle t
   WHERE t.ip = v_ip AND t.window_start > now() - interval '15 minutes';
  IF v_attempts > 20 THEN
    PERFORM parley.raise_error(429, 'too_many_attempts', 'Too many attempts from this address; try again later.');
  END IF;
  DELETE FROM parley.login_throttle t WHERE t.ip = v_ip AND t.window_start <= now() - interval '15 minutes';
END $$;
COMMENT ON FUNCTION parley.throttle_auth_attempt() IS
  'Internal: count one sign-in/reset attempt for the request''s address; raise 429 too_many_attempts above 20 per 15 minutes.';

SELECT parley.secure_functions('parley_auth', NULL,
  'parley.act_as_user(uuid)', 'parley.tenant_json(uuid, uuid)', 'parley.user_json(uuid)',
  'parley.default_tenant_of(uuid, uuid)', 'parley.session_json(uuid, uuid, uuid)',
  'parley.open_session(uuid, bytea, int, uuid, text)', 'parley.audit_for_user(uuid, text, jsonb)',
  'parley.end_sessions(uuid, uuid[], uuid)', 'parley.throttle_auth_attempt()', 'parley.require_signed_in()');

---------------------------------------------------------------------------------------------
-- Sign-up, sign-in, sessions
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.sign_up(
  p_email text, p_password_hash text, p_name text, p_tenant_name text, p_slug text,
  p_refresh_hash bytea, p_refresh_ttl int)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid;
  v_tenant uuid;
BEGIN
  IF (p_tenant_name IS NULL) <> (p_slug IS NULL) THEN
    PERFORM parley.raise_error(422, 'tenant_incomplete', 'Give both a workspace name and a slug, or neither.');
  END IF;
  PERFORM parley.check_account_email(btrim(p_email));
  BEGIN
    INSERT INTO parley.users (email, name, password_hash)
    VALUES (btrim(p_email), coalesce(p_name, ''), p_password_hash)
    RETURNING id INTO v_user;
  EXCEPTION WHEN unique_violation THEN
    PERFORM parley.raise_error(409, 'email_taken', 'An account with this email already exists.');
  END;
  PERFORM parley.act_as_user(v_user);
  IF p_slug IS NOT NULL THEN
    BEGIN
      INSERT INTO parley.tenants (slug, name) VALUES (p_slug, p_tenant_name) RETURNING id INTO v_tenant;
    EXCEPTION WHEN unique_violation THEN
      PERFORM parley.raise_error(409, 'slug_taken', 'That workspace address is taken.');
    END;
    INSERT INTO parley.members (tenant_id, user_id, role) VALUES (v_tenant, v_user, 'owner');
    PERFORM parley.write_audit('auth.sign_up', 'user', v_user::text, '{}', v_tenant);
  END IF;
  RETURN parley.open_session(v_user, p_refresh_hash, p_refresh_ttl, v_tenant);
END $$;
COMMENT ON FUNCTION parley.sign_up(text, text, text, text, text, bytea, int) IS
  'Create a person and, when a name and slug are given, their workspace with them as owner; opens a session. 422 invalid_email (parley.is_account_email), 409 email_taken (case-insensitive) or slug_taken. Definer: no tenant exists yet.';

-- Until 0011 sign-in returned the account's lock and finished without the email.
DROP FUNCTION IF EXISTS parley.finish_sign_in(uuid, text, boolean, bytea, int);
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_proc WHERE oid = to_regprocedure('parley.begin_sign_in(text)')
                                     AND pg_get_function_result(oid) LIKE '%locked_until%') THEN
    DROP FUNCTION parley.begin_sign_in(text);
  END IF;
END $$;

CREATE OR REPLACE FUNCTION parley.begin_sign_in(p_email text)
RETURNS TABLE (user_id uuid, password_hash text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  PERFORM parley.throttle_auth_attempt();
  PERFORM parley.check_sign_in_backoff(p_email);
  RETURN QUERY
    SELECT u.id, u.password_hash FROM parley.users u WHERE u.id = parley.user_by_email(p_email);
END $$;
COMMENT ON FUNCTION parley.begin_sign_in(text) IS
  'Step 1 of sign-in: count the attempt against the address (429 too_many_attempts above 20 per 15 minutes), refuse it while this email is in backoff at this address (429 too_many_attempts, the same for unknown emails), and return the id and password hash of the account with this email (no row when unknown). The password is verified in Python (against a dummy hash when unknown), then finish_sign_in records the outcome.';

CREATE OR REPLACE FUNCTION parley.finish_sign_in(
  p_email text, p_user_id uuid, p_password_hash text, p_password_ok boolean, p_refresh_hash bytea,
  p_refresh_ttl int)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user parley.users%ROWTYPE;
  v_status text;
BEGIN
  -- No account lock: failures slow down this email at this address only (21_sign_in_throttle.sql).
  IF p_user_id IS NOT NULL THEN
    SELECT * INTO v_user FROM parley.users u WHERE u.id = p_user_id FOR UPDATE;
  END IF;
  IF p_user_id IS NULL OR v_user.id IS NULL THEN
    PERFORM parley.record_sign_in_result(p_email, false);  -- unknown emails count alike
    RETURN jsonb_build_object('status', 'invalid');
  END IF;
  PERFORM parley.act_as_user(p_user_id);
  IF p_password_ok AND v_user.password_hash = p_password_hash THEN
    -- (the hash compared is the one verified: a reset in between makes the old password fail)
    v_status := 'ok';
  ELSE
    v_status := 'invalid';
  END IF;
  PERFORM parley.record_sign_in_result(p_email, v_status = 'ok');
  PERFORM parley.audit_for_user(p_user_id,
    CASE WHEN v_status = 'ok' THEN 'auth.sign_in' ELSE 'auth.sign_in_failed' END,
    CASE WHEN v_status = 'ok' THEN '{}'::jsonb ELSE jsonb_build_object('reason', v_status) END);
  IF v_status <> 'ok' THEN
    RETURN jsonb_build_object('status', v_status);
  END IF;
  RETURN parley.open_session(p_user_id, p_refresh_hash, p_refresh_ttl);
END $$;
COMMENT ON FUNCTION parley.finish_sign_in(text, uuid, text, boolean, bytea, int) IS
  'Step 2 of sign-in: record the outcome for this email at the request''s address (record_sign_in_result: a failure counts towards the backoff, also for an unknown email; a success clears it) and, for a success, open a session in the last-used workspace. No account-wide lock. Audited (auth.sign_in / auth.sign_in_failed) in each workspace of the person. Returns {status: ok|invalid, ...}; never raises, so failures are committed.';

CREATE OR REPLACE FUNCTION parley.rotate_session(p_refresh_hash bytea, p_new_refresh_hash bytea, p_refresh_ttl int)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_old parley.refresh_tokens%ROWTYPE;
  v_new parley.refresh_tokens%ROWTYPE;
  v_tenant uuid;
BEGIN
  -- The person first, then their tokens (the order of every path that ends sessions: a password
  -- change or reset, account deletion). FOR SHARE: refreshes of one person run side by side, a
  -- password change waits for them and they for it, so the change's end_sessions also sees the token
  -- a refresh just made. Locking only the token deadlocked with such a change, or let the new
  -- token outlive it (tests/foundation/test_account_link_locks.py).
  PERFORM FROM parley.users u
   WHERE u.id = (SELECT r.user_id FROM parley.refresh_tokens r WHERE r.token_hash = p_refresh_hash) FOR SHARE;
  SELECT * INTO v_old FROM parley.refresh_tokens r WHERE r.token_hash = p_refresh_hash FOR UPDATE;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('status', 'invalid');
  END IF;
  PERFORM parley.act_as_user(v_old.user_id);
  IF v_old.used_at IS NOT NULL AND v_old.revoked_at IS NULL AND v_old.used_at > now() - interval '10 seconds' THEN
    -- Grace window: the client's parallel refreshes (tabs, retries) present the same token at once.
    -- The successor is derived from the presented token with the server's key, so a repeat names the
    -- same successor: while that one is unused, the repeat gets the same new pair instead of ending the
    -- session. (These requests waited on this row's lock for the first one to commit.)
    SELECT * INTO v_new FROM parley.refresh_tokens r
     WHERE r.token_hash = p_new_refresh_hash AND r.family_id = v_old.family_id;
    IF FOUND AND v_new.used_at IS NULL AND v_new.revoked_at IS NULL AND v_new.expires_at > now() THEN
      RETURN parley.session_json(v_old.user_id, parley.default_tenant_of(v_old.user_id, v_new.tenant_id),
                                 v_old.family_id);
    END IF;
  END IF;
  IF v_old.used_at IS NOT NULL THEN
    -- A rotated token came back: it was stolen or replayed. End the whole family.
    PERFORM parley.end_sessions(v_old.user_id, ARRAY[v_old.family_id]);
    PERFORM parley.audit_for_user(v_old.user_id, 'auth.refresh_reused',
                                  jsonb_build_object('session_id', v_old.family_id));
    RETURN jsonb_build_object('status', 'reused');
  END IF;
  IF v_old.revoked_at IS NOT NULL OR v_old.expires_at <= now() THEN
    RETURN jsonb_build_object('status', 'invalid');
  END IF;
  UPDATE parley.refresh_tokens SET used_at = now() WHERE id = v_old.id;
  v_tenant := parley.default_tenant_of(v_old.user_id, v_old.tenant_id);
  INSERT INTO parley.refresh_tokens (family_id, user_id, token_hash, expires_at, tenant_id)
  VALUES (v_old.family_id, v_old.user_id, p_new_refresh_hash,
          now() + make_interval(secs => p_refresh_ttl), v_tenant);
  RETURN parley.session_json(v_old.user_id, v_tenant, v_old.family_id);
END $$;
COMMENT ON FUNCTION parley.rotate_session(bytea, bytea, int) IS
  'Exchange a refresh token for a new one in the same family (the session keeps its workspace). The caller derives the new token from the presented one (HMAC with the server key), so parallel refreshes name the same successor: within 10 seconds of the rotation, while that successor is unused, a repeat returns the same session (the same new pair) instead of counting as reuse. Otherwise a token presented a second time revokes the whole family and returns {status: reused}; unknown, revoked or expired → {status: invalid}. Never raises, so a revocation is committed.';

CREATE OR REPLACE FUNCTION parley.end_session(p_everywhere boolean DEFAULT false) RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid := parley.require_signed_in();
  v_count int;
BEGIN
  -- The person first, then their tokens, as rotate_session and a password change: a refresh of this
  -- session in flight finishes first and the token it made is ended too. Ending the tokens alone
  -- missed that new token, so the session outlived its sign-out (bench/races.py logout_vs_refresh).
  PERFORM FROM parley.users u WHERE u.id = v_user FOR NO KEY UPDATE;
  v_count := parley.end_sessions(v_user, CASE WHEN p_everywhere THEN NULL ELSE ARRAY[parley.current_session_id()] END);
  PERFORM parley.audit_for_user(v_user, 'auth.sign_out', jsonb_build_object('everywhere', p_everywhere));
  RETURN v_count;
END $$;
COMMENT ON FUNCTION parley.end_session(boolean) IS
  'Sign out: end the current session (refresh-token family) or, with p_everywhere, every session of the signed-in person (parley.end_sessions); returns how many sessions ended. Access tokens of an ended session stop working at once (begin_request checks the family).';

CREATE OR REPLACE FUNCTION parley.switch_tenant(p_tenant_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid := parley.require_signed_in();
  v_tenant jsonb := parley.tenant_json(p_tenant_id, v_user);
BEGIN
  IF v_tenant IS NULL THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such workspace.');
  END IF;
  UPDATE parley.refresh_tokens SET tenant_id = p_tenant_id
   WHERE family_id = parley.current_session_id() AND user_id = v_user AND revoked_at IS NULL;
  UPDATE parley.users SET last_tenant_id = p_tenant_id WHERE id = v_user;
  RETURN parley.session_json(v_user, p_tenant_id, parley.current_session_id());
END $$;
COMMENT ON FUNCTION parley.switch_tenant(uuid) IS
  'Move the current session to another live workspace the person belongs to (404 otherwise); refreshes keep it and the next sign-in lands there.';

CREATE OR REPLACE FUNCTION parley.get_me(p_tenant_id uuid) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT jsonb_build_object('user', parley.user_json(me), 'tenant', parley.tenant_json(p_tenant_id, me),
                            'session_id', parley.current_session_id())
    FROM parley.require_signed_in() me
$$;
COMMENT ON FUNCTION parley.get_me(uuid) IS
  'The signed-in person and the workspace their token names (NULL if none, left or deleted).';

CREATE OR REPLACE FUNCTION parley.list_my_tenants() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT coalesce((SELECT jsonb_agg(parley.tenant_json(m.tenant_id, me) ORDER BY t.name, t.id)
                     FROM parley.members m JOIN parley.tenants t ON t.id = m.tenant_id AND t.deleted_at IS NULL
                    WHERE m.user_id = me), '[]'::jsonb)
    FROM parley.require_signed_in() me
$$;
COMMENT ON FUNCTION parley.list_my_tenants() IS
  'Every live workspace the signed-in person belongs to, with their role. Definer: memberships of other tenants are outside the RLS scope.';

---------------------------------------------------------------------------------------------
-- Password reset
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.request_password_reset(p_email text, p_token_hash bytea) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user parley.users%ROWTYPE;
BEGIN
  PERFORM parley.throttle_auth_attempt();
  SELECT * INTO v_user FROM parley.users u WHERE u.id = parley.user_by_email(p_email);
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  INSERT INTO parley.password_resets (user_id, token_hash, expires_at)
  VALUES (v_user.id, p_token_hash, now() + interval '1 hour');
  PERFORM parley.act_as_user(v_user.id);
  PERFORM parley.audit_for_user(v_user.id, 'auth.password_reset_requested');
  RETURN jsonb_build_object('email', v_user.email, 'name', v_user.name);
END $$;
COMMENT ON FUNCTION parley.request_password_reset(text, bytea) IS
  'Store a one-hour reset token for the account with this email and return where to send it; NULL when there is no such account (the caller answers the same either way). Counts against the address throttle.';

-- An e-mailed link (a password reset, an address to verify): a row with user_id, token_hash,
-- expires_at and used_at, good once, before it expires; using one spends every other of its kind
-- the person has outstanding.
-- Lock order: the person's users row, then their links. Requesting a link
-- (request_email_verification), changing the password (change_password) and deleting the account
-- lock the person first and then write their links; using a link does the same, so two of these
-- at once for one person queue instead of deadlocking (tests/foundation/test_account_link_locks.py).
-- FOR NO KEY UPDATE: what every caller's own write of the row takes (FOR UPDATE would also hold up
-- rows that only reference the person: their foreign keys take KEY SHARE). Refreshes keep the same
-- order (rotate_session).
CREATE OR REPLACE FUNCTION parley.use_emailed_link(
  p_links regclass, p_token_hash bytea, p_invalid_code text, p_invalid_message text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_link jsonb;
  v_user uuid;
BEGIN
  EXECUTE format('SELECT l.user_id FROM %s l WHERE l.token_hash = $1', p_links) INTO v_user USING p_token_hash;
  PERFORM FROM parley.users u WHERE u.id = v_user FOR NO KEY UPDATE;
  -- Read again under the lock: another use of it may have committed while this one waited.
  EXECUTE format('SELECT to_jsonb(l) FROM %s l WHERE l.token_hash = $1 AND l.used_at IS NULL AND l.expires_at > now()'
                 ' FOR UPDATE', p_links) INTO v_link USING p_token_hash;
  IF v_link IS NULL THEN
    PERFORM parley.raise_error(400, p_invalid_code, p_invalid_message);
  END IF;
  EXECUTE format('UPDATE %s SET used_at = now() WHERE user_id = $1 AND used_at IS NULL', p_links)
    USING (v_link ->> 'user_id')::uuid;
  PERFORM parley.act_as_user((v_link ->> 'user_id')::uuid);
  RETURN v_link;
END $$;
COMMENT ON FUNCTION parley.use_emailed_link(regclass, bytea, text, text) IS
  'Internal: use the e-mailed link of table p_links with this token hash (400 p_invalid_code when there is none, or it is used or expired): every outstanding link of that kind of its person is spent, the person becomes the actor; returns the link''s row as jsonb. Locks the person''s users row (FOR NO KEY UPDATE) before the links, the order every path that writes a person''s links keeps.';
SELECT parley.secure_functions('parley_auth', NULL, 'parley.use_emailed_link(regclass, bytea, text, text)');

CREATE OR REPLACE FUNCTION parley.reset_password(p_token_hash bytea, p_password_hash text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid := (parley.use_emailed_link('parley.password_resets', p_token_hash, 'invalid_reset_token',
                                          'This reset link is invalid, used or expired.') ->> 'user_id')::uuid;
BEGIN
  -- Using the emailed link also proves the person reads that mailbox.
  UPDATE parley.users SET password_hash = p_password_hash, failed_logins = 0, locked_until = NULL,
                          email_verified_at = coalesce(email_verified_at, now())
   WHERE id = v_user;
  PERFORM parley.end_sessions(v_user);
  PERFORM parley.audit_for_user(v_user, 'auth.password_reset');
  RETURN v_user;
END $$;
COMMENT ON FUNCTION parley.reset_password(bytea, text) IS
  'Set a new password hash with a live reset token (single use, one hour), unlock the account, mark the email verified and revoke every session. 400 invalid_reset_token otherwise.';
---------------------------------------------------------------------------------------------
-- Housekeeping for the jobs process
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.prune_auth_tables() RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_total int := 0;
  v_count int;
BEGIN
  DELETE FROM parley.login_throttle WHERE window_start < now() - interval '1 hour';
  GET DIAGNOSTICS v_count = ROW_COUNT;
  v_total := v_total + v_count;
  DELETE FROM parley.refresh_tokens WHERE expires_at < now() - interval '7 days'
     OR revoked_at < now() - interval '7 days';
  GET DIAGNOSTICS v_count = ROW_COUNT;
  v_total := v_total + v_count;
  DELETE FROM parley.password_resets WHERE expires_at < now() - interval '1 day';
  GET DIAGNOSTICS v_count = ROW_COUNT;
  v_total := v_total + v_count;
  RETURN v_total + parley.prune_sign_in_failures() + parley.prune_email_verifications();
END $$;
COMMENT ON FUNCTION parley.prune_auth_tables() IS
  'Delete stale login-throttle buckets and sign-in backoff rows, long-dead refresh tokens, expired reset tokens and verification links; returns rows deleted. For the jobs process.';

---------------------------------------------------------------------------------------------
-- Ownership and grants
---------------------------------------------------------------------------------------------
-- Definer functions: owned by parley_auth (BYPASSRLS), executable by the server only.
SELECT parley.secure_functions('parley_auth', '{parley_app}',
  'parley.begin_auth_request(text, text, uuid, uuid)', 'parley.sign_up(text, text, text, text, text, bytea, int)',
  'parley.begin_sign_in(text)', 'parley.finish_sign_in(text, uuid, text, boolean, bytea, int)',
  'parley.rotate_session(bytea, bytea, int)', 'parley.end_session(boolean)', 'parley.switch_tenant(uuid)',
  'parley.get_me(uuid)', 'parley.list_my_tenants()', 'parley.request_password_reset(text, bytea)',
  'parley.reset_password(bytea, text)');
SELECT parley.secure_functions('parley_auth', '{parley_jobs}', 'parley.prune_auth_tables()');
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs, parley_auth}', 'parley.current_session_id()');
SELECT parley.secure_functions(NULL, '{parley_app, parley_auth}', 'parley.user_by_email(text)');

-- The new columns of 0002 are for the auth functions only.
GRANT SELECT (last_tenant_id) ON parley.users TO parley_app;
