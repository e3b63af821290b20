-- Sign in with OpenID Connect (pyapp/accounts/oidc.py speaks the protocol; the rules are here):
-- a pending sign-in is used once, by the browser that started it, within ten minutes; an
-- identity links to an existing person only when the provider vouches for the email
-- address; a workspace that requires SSO lets in only sessions an identity provider opened.
-- Definer functions owned by parley_auth: they run before a tenant is known.

SELECT parley.force_row_security('parley.user_identities', 'parley.oidc_logins', 'parley.sso_sessions');
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.user_identities, parley.oidc_logins, parley.sso_sessions
  TO parley_auth;
GRANT UPDATE (require_sso) ON parley.tenants TO parley_auth;

-- What a password can never match: accounts made by an identity provider carry it until
-- their owner sets a password through the reset link.
CREATE OR REPLACE FUNCTION parley.no_password() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '!sso'::text $$;
COMMENT ON FUNCTION parley.no_password() IS
  'The password_hash of an account created by single sign-on: not an argon2 hash, so no password verifies against it.';

CREATE OR REPLACE FUNCTION parley.oidc_begin(
  p_state_hash bytea, p_provider text, p_binding_hash bytea, p_next text, p_link boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  PERFORM parley.throttle_auth_attempt();
  IF p_link AND parley.current_user_id() IS NULL THEN
    PERFORM parley.raise_error(401, 'unauthenticated', 'Sign in first to link an identity.');
  END IF;
  -- Abandoned sign-ins go away as new ones start (a few at a time, oldest first).
  DELETE FROM parley.oidc_logins l
   WHERE l.state_hash IN (SELECT o.state_hash FROM parley.oidc_logins o
                           WHERE o.expires_at < now() ORDER BY o.expires_at LIMIT 20);
  INSERT INTO parley.oidc_logins (state_hash, provider, binding_hash, next_path, link_user_id, expires_at)
  VALUES (p_state_hash, p_provider, p_binding_hash, coalesce(p_next, '/console/'),
          CASE WHEN p_link THEN parley.current_user_id() END, now() + interval '10 minutes');
END $$;
COMMENT ON FUNCTION parley.oidc_begin(bytea, text, bytea, text, boolean) IS
  'Record a sign-in sent to an identity provider: the state''s hash, the browser binding''s hash, where to land, and (p_link, signed in) the person linking an identity. Counts against the address''s sign-in throttle (429). Valid 10 minutes.';

CREATE OR REPLACE FUNCTION parley.oidc_take_login(p_state_hash bytea, p_provider text, p_binding_hash bytea)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_login parley.oidc_logins%ROWTYPE;
BEGIN
  -- Spent whatever the outcome: a state presented from the wrong browser is dead for the right one too.
  DELETE FROM parley.oidc_logins l WHERE l.state_hash = p_state_hash RETURNING * INTO v_login;
  IF v_login.state_hash IS NULL OR v_login.expires_at < now() OR v_login.provider <> p_provider
     OR v_login.binding_hash <> p_binding_hash THEN
    RETURN jsonb_build_object('status', 'invalid');
  END IF;
  RETURN jsonb_build_object('status', 'ok', 'next', v_login.next_path, 'link_user_id', v_login.link_user_id);
END $$;
COMMENT ON FUNCTION parley.oidc_take_login(bytea, text, bytea) IS
  'Use a pending sign-in once: it must exist, be under 10 minutes old, be for this provider and come back to the browser that started it. Returns {status: ok, next, link_user_id} or {status: invalid}; never raises, so the state is spent (committed) even when it was presented wrongly.';

CREATE OR REPLACE FUNCTION parley.oidc_sign_in(
  p_provider text, p_issuer text, p_subject text, p_email text, p_email_verified boolean, p_name text,
  p_link_user_id uuid, p_allow_sign_up boolean, p_refresh_hash bytea, p_refresh_ttl int)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid;
  v_by_email uuid;
  v_email text := nullif(btrim(coalesce(p_email, '')), '');
  v_name text := left(btrim(coalesce(p_name, '')), 200);
BEGIN
  -- What the provider says is not typed by the person: a value our rules refuse is dropped, not fatal.
  IF NOT parley.is_account_email(v_email) THEN
    v_email := NULL;
  END IF;
  IF parley.unsafe_text(v_name, true) THEN
    v_name := '';
  END IF;
  SELECT i.user_id INTO v_user FROM parley.user_identities i
   WHERE i.issuer = p_issuer AND i.subject = p_subject;

  IF p_link_user_id IS NOT NULL THEN
    -- A signed-in person adds this identity to their own account.
    IF v_user IS NOT NULL AND v_user <> p_link_user_id THEN
      PERFORM parley.raise_error(409, 'identity_taken', 'This identity already signs in to another account.');
    END IF;
    PERFORM parley.act_as_user(p_link_user_id);
    IF v_user IS NULL THEN
      INSERT INTO parley.user_identities (issuer, subject, user_id, provider, email)
      VALUES (p_issuer, p_subject, p_link_user_id, p_provider, v_email);
      PERFORM parley.audit_for_user(p_link_user_id, 'auth.identity_linked',
                                    jsonb_build_object('provider', p_provider));
    END IF;
    RETURN jsonb_build_object('status', 'linked', 'user', parley.user_json(p_link_user_id));
  END IF;

  IF v_user IS NULL AND v_email IS NOT NULL THEN
    v_by_email := parley.user_by_email(v_email);
    IF v_by_email IS NOT NULL THEN
      -- Only an address the provider vouches for may take over an existing account.
      IF NOT coalesce(p_email_verified, false) THEN
        RETURN jsonb_build_object('status', 'unverified_email');
      END IF;
      v_user := v_by_email;
      INSERT INTO parley.user_identities (issuer, subject, user_id, provider, email)
      VALUES (p_issuer, p_subject, v_user, p_provider, v_email);
      UPDATE parley.users SET email_verified_at = coalesce(email_verified_at, now()) WHERE id = v_user;
      PERFORM parley.audit_for_user(v_user, 'auth.identity_linked', jsonb_build_object('provider', p_provider));
    ELSIF p_allow_sign_up THEN
      INSERT INTO parley.users (email, name, password_hash, email_verified_at)
      VALUES (v_email, v_name, parley.no_password(),
              CASE WHEN p_email_verified THEN now() END)
      RETURNING id INTO v_user;
      INSERT INTO parley.user_identities (issuer, subject, user_id, provider, email)
      VALUES (p_issuer, p_subject, v_user, p_provider, v_email);
    END IF;
  END IF;
  IF v_user IS NULL THEN
    RETURN jsonb_build_object('status', CASE WHEN v_email IS NULL THEN 'no_email' ELSE 'no_account' END);
  END IF;

  PERFORM parley.act_as_user(v_user);
  UPDATE parley.user_identities SET last_used_at = now(), email = coalesce(v_email, email)
   WHERE issuer = p_issuer AND subject = p_subject;
  PERFORM parley.audit_for_user(v_user, 'auth.sign_in', jsonb_build_object('method', 'sso', 'provider', p_provider));
  RETURN parley.open_session(v_user, p_refresh_hash, p_refresh_ttl, NULL, p_issuer);
END $$;
COMMENT ON FUNCTION parley.oidc_sign_in(text, text, text, text, boolean, text, uuid, boolean, bytea, int) IS
  'Finish a sign-in whose id_token the server verified: the person linked to (issuer, subject); else the account with the same email when the provider says it is verified (linked now; unverified → status unverified_email, nothing linked); else a new person when sign-up is allowed (no usable password). Opens a session marked as SSO (sso_sessions) and audits it. With p_link_user_id, links the identity to that signed-in person instead (409 identity_taken when it belongs to someone else). Returns session_json, or {status: linked|unverified_email|no_account|no_email}.';

CREATE OR REPLACE FUNCTION parley.list_my_identities() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('provider', i.provider, 'issuer', i.issuer, 'email', i.email,
                                               'created_at', i.created_at, 'last_used_at', i.last_used_at)
                            ORDER BY i.created_at), '[]'::jsonb)
    FROM parley.user_identities i WHERE i.user_id = parley.current_user_id()
$$;
COMMENT ON FUNCTION parley.list_my_identities() IS
  'The signed-in person''s linked identities (provider, issuer, email, when linked and last used); never another person''s.';

CREATE OR REPLACE FUNCTION parley.unlink_my_identity(p_provider text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid := parley.require_signed_in();
BEGIN
  IF NOT EXISTS (SELECT 1 FROM parley.user_identities i WHERE i.user_id = v_user AND i.provider = p_provider) THEN
    PERFORM parley.raise_error(404, 'identity_not_found', 'No identity of this provider is linked to your account.');
  END IF;
  -- The last way in stays: no password and no other identity would lock the person out.
  IF (SELECT u.password_hash FROM parley.users u WHERE u.id = v_user) = parley.no_password()
     AND NOT EXISTS (SELECT 1 FROM parley.user_identities i WHERE i.user_id = v_user AND i.provider <> p_provider) THEN
    PERFORM parley.raise_error(409, 'last_sign_in_method',
      'This identity is your only way to sign in: set a password first (Forgot password).');
  END IF;
  DELETE FROM parley.user_identities i WHERE i.user_id = v_user AND i.provider = p_provider;
  PERFORM parley.act_as_user(v_user);
  PERFORM parley.audit_for_user(v_user, 'auth.identity_unlinked', jsonb_build_object('provider', p_provider));
END $$;
COMMENT ON FUNCTION parley.unlink_my_identity(text) IS
  'Remove the signed-in person''s identity of this provider (404 identity_not_found); refused (409 last_sign_in_method) when it is their only way in.';

CREATE OR REPLACE FUNCTION parley.is_sso_session(p_session_id uuid) RETURNS boolean
LANGUAGE sql STABLE
AS $$ SELECT EXISTS (SELECT 1 FROM parley.sso_sessions s WHERE s.family_id = p_session_id) $$;
COMMENT ON FUNCTION parley.is_sso_session(uuid) IS
  'Internal to the definer functions: was this session (refresh-token family) opened by an identity provider?';

CREATE OR REPLACE FUNCTION parley.get_require_sso() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  RETURN (SELECT jsonb_build_object('required', t.require_sso,
                                    'this_session_is_sso', parley.is_sso_session(parley.current_session_id()))
            FROM parley.tenants t WHERE t.id = parley.current_tenant_id());
END $$;
COMMENT ON FUNCTION parley.get_require_sso() IS
  'Whether the current workspace requires single sign-on, and whether the caller''s own session came through it (admin+).';

CREATE OR REPLACE FUNCTION parley.set_require_sso(p_required boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_before boolean;
BEGIN
  PERFORM parley.require_role('owner');
  IF parley.current_user_id() IS NULL THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only a signed-in owner can change single sign-on.');
  END IF;
  -- Whoever turns it on must be inside through SSO already, or they would lock themselves out.
  IF p_required AND NOT parley.is_sso_session(parley.current_session_id()) THEN
    PERFORM parley.raise_error(409, 'sso_session_required',
      'Sign in with your identity provider first: requiring SSO from a password session would lock you out.');
  END IF;
  SELECT t.require_sso INTO v_before FROM parley.tenants t WHERE t.id = parley.current_tenant_id() FOR UPDATE;
  UPDATE parley.tenants SET require_sso = p_required WHERE id = parley.current_tenant_id();
  IF v_before IS DISTINCT FROM p_required THEN
    PERFORM parley.write_audit('tenant.require_sso', 'tenant', parley.current_tenant_id()::text,
                               jsonb_build_object('before', v_before, 'after', p_required));
  END IF;
  RETURN parley.get_require_sso();
END $$;
COMMENT ON FUNCTION parley.set_require_sso(boolean) IS
  'Owner only, signed in (no API key): require single sign-on for the current workspace, or stop requiring it. Turning it on needs the caller''s own session to have come through an identity provider (409 sso_session_required). Audited (tenant.require_sso) when it changes.';

SELECT parley.secure_functions('parley_auth', '{parley_app}',
  'parley.oidc_begin(bytea, text, bytea, text, boolean)', 'parley.oidc_take_login(bytea, text, bytea)',
  'parley.oidc_sign_in(text, text, text, text, boolean, text, uuid, boolean, bytea, int)',
  'parley.list_my_identities()', 'parley.unlink_my_identity(text)', 'parley.get_require_sso()',
  'parley.set_require_sso(boolean)');
SELECT parley.secure_functions('parley_auth', NULL, 'parley.is_sso_session(uuid)');
