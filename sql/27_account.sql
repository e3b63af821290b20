-- Account self-service for the signed-in person: e-mail verification (and e-mail change through
-- it), profile, change password, delete the account. Leaving a workspace is remove_member on
-- oneself (23_members.sql); the sole-owner rule for both leaving and deleting the account is the
-- members trigger parley.protect_last_owner, so no path can leave a live workspace without owner.
--
-- A person is global, so these are SECURITY DEFINER functions owned by parley_auth, called inside
-- the tenant-less account transaction (parley.begin_auth_request) and filtering by
-- parley.current_user_id() explicitly. Tokens are generated in Python; only their SHA-256 arrives.
-- The current password is verified in Python (argon2) against the hash begin_password_check
-- returns, then finish_password_check records the outcome in the sign-in backoff, so a stolen
-- access token cannot be used to guess the password faster than sign-in allows.

---------------------------------------------------------------------------------------------
-- The account e-mail rule, once: sign-up and an e-mail change refuse an address it refuses (422),
-- single sign-on drops one (only these write users.email, as parley_auth; the app roles cannot);
-- pyapp/accounts/models.py's Email answers the same before SQL (tests/foundation/test_account_email.py).
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.is_account_email(p_email text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT p_email ~ '^[^@\s]+@[^@\s]+$' AND length(p_email) <= 320 AND NOT parley.unsafe_text(p_email, true) $$;
COMMENT ON FUNCTION parley.is_account_email(text) IS
  'Whether text may be an account''s e-mail address: one line (parley.unsafe_text), something@something without white space, at most 320 characters. NULL for NULL.';

CREATE OR REPLACE FUNCTION parley.check_account_email(p_email text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  PERFORM parley.check_text(p_email, 'invalid_email', 'The email address', true);
  IF NOT coalesce(parley.is_account_email(p_email), false) THEN
    PERFORM parley.raise_error(422, 'invalid_email', 'Enter a valid email address.');
  END IF;
END $$;
COMMENT ON FUNCTION parley.check_account_email(text) IS
  'Raise 422 invalid_email unless parley.is_account_email(p_email) (the text rule''s message for a control or text-direction character).';

---------------------------------------------------------------------------------------------
-- E-mail verification and e-mail change
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.request_email_verification(p_token_hash bytea, p_new_email text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user parley.users%ROWTYPE;
  v_email text := btrim(p_new_email);
  v_change boolean;
BEGIN
  -- The person, then their links: the lock order of e-mailed links (use_emailed_link, 22_sessions.sql).
  SELECT * INTO v_user FROM parley.users u WHERE u.id = parley.require_signed_in() FOR UPDATE;
  v_change := v_email IS NOT NULL AND lower(v_email) <> lower(v_user.email);
  IF NOT v_change THEN
    IF v_user.email_verified_at IS NOT NULL THEN
      PERFORM parley.raise_error(409, 'already_verified', 'This email address is already verified.');
    END IF;
    v_email := v_user.email;
  ELSE
    PERFORM parley.check_account_email(v_email);
    IF parley.user_by_email(v_email) IS NOT NULL THEN
      PERFORM parley.raise_error(409, 'email_taken', 'Another account uses this email address.');
    END IF;
  END IF;
  IF EXISTS (SELECT 1 FROM parley.email_verifications v
              WHERE v.user_id = v_user.id AND v.created_at > now() - interval '1 minute') THEN
    PERFORM parley.raise_error(429, 'too_many_attempts', 'A link was sent less than a minute ago; check your inbox.');
  END IF;
  -- One live link per person: a new one replaces any outstanding one.
  UPDATE parley.email_verifications SET used_at = now() WHERE user_id = v_user.id AND used_at IS NULL;
  INSERT INTO parley.email_verifications (user_id, email, token_hash, expires_at)
  VALUES (v_user.id, v_email, p_token_hash, now() + interval '24 hours');
  PERFORM parley.audit_for_user(v_user.id,
    CASE WHEN v_change THEN 'account.email_change_requested' ELSE 'account.verification_requested' END);
  RETURN jsonb_build_object('email', v_email, 'name', v_user.name, 'change', v_change);
END $$;
COMMENT ON FUNCTION parley.request_email_verification(bytea, text) IS
  'Store a 24-hour, single-use verification token for the signed-in person (replacing any outstanding one) and return where to send it: their own address (409 already_verified when it is), or p_new_email for an e-mail change (409 email_taken when another account has it; the address changes only when its link is used). At most one link a minute per person (429 too_many_attempts); audited.';

CREATE OR REPLACE FUNCTION parley.verify_email(p_token_hash bytea) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_link jsonb := parley.use_emailed_link('parley.email_verifications', p_token_hash, 'invalid_verification_token',
                                          'This verification link is invalid, used or expired.');
  v_user uuid := (v_link ->> 'user_id')::uuid;
  v_email text := v_link ->> 'email';
  v_old text;
BEGIN
  SELECT u.email INTO v_old FROM parley.users u WHERE u.id = v_user FOR UPDATE;
  IF parley.user_by_email(v_email) <> v_user THEN  -- someone else took it meanwhile
    PERFORM parley.raise_error(409, 'email_taken', 'Another account uses this email address now.');
  END IF;
  UPDATE parley.users SET email = v_email, email_verified_at = now() WHERE id = v_user;
  PERFORM parley.audit_for_user(v_user,
    CASE WHEN v_old <> v_email THEN 'account.email_changed' ELSE 'account.email_verified' END);
  RETURN parley.user_json(v_user);
END $$;
COMMENT ON FUNCTION parley.verify_email(bytea) IS
  'Use a verification link (no sign-in needed: the token is the proof): mark the address verified and, for an e-mail change, make it the account''s address (409 email_taken if someone took it meanwhile). Single use; every other outstanding link of the person dies; 400 invalid_verification_token otherwise. Audited.';

---------------------------------------------------------------------------------------------
-- Profile
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.update_profile(p_name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid := parley.require_signed_in();
BEGIN
  PERFORM parley.check_text(p_name, 'invalid_name', 'The name', true);
  IF length(p_name) > 200 THEN
    PERFORM parley.raise_error(422, 'invalid_name', 'The name may be at most 200 characters.');
  END IF;
  UPDATE parley.users SET name = btrim(p_name) WHERE id = v_user AND name <> btrim(p_name);
  IF FOUND THEN
    PERFORM parley.audit_for_user(v_user, 'account.profile_updated');
  END IF;
  RETURN parley.user_json(v_user);
END $$;
COMMENT ON FUNCTION parley.update_profile(text) IS
  'Set the signed-in person''s display name (one line of text, at most 200 characters); audited when it changes.';

---------------------------------------------------------------------------------------------
-- Proving the current password: change password, delete account
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.begin_password_check() RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user parley.users%ROWTYPE;
BEGIN
  SELECT * INTO v_user FROM parley.users u WHERE u.id = parley.require_signed_in();
  PERFORM parley.check_sign_in_backoff(v_user.email);
  RETURN v_user.password_hash;
END $$;
COMMENT ON FUNCTION parley.begin_password_check() IS
  'Step 1 of re-proving the password (change password, delete account): refuse while the person''s email is in sign-in backoff at this address (429), else return their password hash for the server to verify.';

CREATE OR REPLACE FUNCTION parley.finish_password_check(p_verified_hash text, p_ok boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_user parley.users%ROWTYPE;
  v_ok boolean;
BEGIN
  SELECT * INTO v_user FROM parley.users u WHERE u.id = parley.require_signed_in() FOR UPDATE;
  -- The hash compared is the one verified: a change in between makes the old password fail.
  v_ok := coalesce(p_ok, false) AND v_user.password_hash = p_verified_hash;
  PERFORM parley.record_sign_in_result(v_user.email, v_ok);
  IF NOT v_ok THEN
    PERFORM parley.audit_for_user(v_user.id, 'auth.password_check_failed');
  END IF;
  RETURN v_ok;
END $$;
COMMENT ON FUNCTION parley.finish_password_check(text, boolean) IS
  'Internal: step 2 of re-proving the password: true when the server verified the password against the current hash; the outcome counts in the sign-in backoff like a sign-in (a failure is audited).';

CREATE OR REPLACE FUNCTION parley.change_password(p_verified_hash text, p_ok boolean, p_new_hash text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid := parley.require_signed_in();
  v_ended int;
BEGIN
  IF NOT parley.finish_password_check(p_verified_hash, p_ok) THEN
    RETURN jsonb_build_object('status', 'invalid');
  END IF;
  UPDATE parley.users SET password_hash = p_new_hash WHERE id = v_user;
  UPDATE parley.password_resets SET used_at = now() WHERE user_id = v_user AND used_at IS NULL;
  v_ended := parley.end_sessions(v_user, p_keep => parley.current_session_id());  -- this one goes on
  PERFORM parley.audit_for_user(v_user, 'auth.password_changed', jsonb_build_object('sessions_ended', v_ended));
  RETURN jsonb_build_object('status', 'ok', 'sessions_ended', v_ended);
END $$;
COMMENT ON FUNCTION parley.change_password(text, boolean, text) IS
  'Change the signed-in person''s password after the server verified the current one (p_ok against p_verified_hash, counted like a sign-in): the new hash is stored, outstanding reset links die and every other session of the person ends (this one stays). Returns {status: ok, sessions_ended} or {status: invalid}; never raises for a wrong password, so the failure is committed. Audited.';

CREATE OR REPLACE FUNCTION parley.delete_account(p_verified_hash text, p_ok boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid := parley.require_signed_in();
BEGIN
  IF NOT parley.finish_password_check(p_verified_hash, p_ok) THEN
    RETURN jsonb_build_object('status', 'invalid');
  END IF;
  -- Audited first, in each workspace, while the memberships still say where.
  PERFORM parley.audit_for_user(v_user, 'account.deleted');
  PERFORM parley.end_sessions(v_user);  -- closes live sockets at once (26_revocation.sql)
  -- Memberships go first, one by one through protect_last_owner, which refuses (409 last_owner)
  -- when this is the only owner of a live workspace; the whole deletion then rolls back.
  DELETE FROM parley.members WHERE user_id = v_user;
  DELETE FROM parley.users WHERE id = v_user;
  RETURN jsonb_build_object('status', 'ok');
END $$;
COMMENT ON FUNCTION parley.delete_account(text, boolean) IS
  'Delete the signed-in person''s account after the server verified the current password: sessions, memberships, links and tokens go with it; invites and keys they made keep no reference. Refused (409 last_owner, nothing changed) while they are the only owner of a live workspace: transfer ownership or delete the workspace first. Returns {status: ok|invalid}. Audited in each workspace before the memberships go.';

---------------------------------------------------------------------------------------------
-- Housekeeping, ownership and grants
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.prune_email_verifications() RETURNS int
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
  WITH gone AS (DELETE FROM parley.email_verifications WHERE expires_at < now() - interval '1 day' RETURNING 1)
  SELECT count(*)::int FROM gone
$$;
COMMENT ON FUNCTION parley.prune_email_verifications() IS
  'Internal: delete verification links expired over a day ago; returns how many (part of prune_auth_tables).';

SELECT parley.force_row_security('parley.email_verifications');
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.email_verifications TO parley_auth;
GRANT DELETE ON parley.users TO parley_auth;
GRANT DELETE ON parley.members TO parley_auth;

SELECT parley.secure_functions('parley_auth', NULL,
  'parley.finish_password_check(text, boolean)', 'parley.prune_email_verifications()');
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs, parley_auth}',
  'parley.is_account_email(text)', 'parley.check_account_email(text)');
SELECT parley.secure_functions('parley_auth', '{parley_app}',
  'parley.request_email_verification(bytea, text)', 'parley.verify_email(bytea)', 'parley.update_profile(text)',
  'parley.begin_password_check()', 'parley.change_password(text, boolean, text)', 'parley.delete_account(text, boolean)');
