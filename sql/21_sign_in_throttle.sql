-- Sign-in backoff per (email, client network): the guesser slows down, the account's owner
-- elsewhere does not. Five failures in a row from one network for one email are free; after
-- that each failure blocks that pair for 1, 2, 4, ... seconds, at most 15 minutes; a success
-- from there clears it, an hour without failures forgets it. The same for emails no account
-- has, so the answers do not tell which accounts exist. (The per-address throttle across all
-- emails, throttle_auth_attempt, is in 22_sessions.sql.) Table: migration 0011.

SELECT parley.force_row_security('parley.sign_in_failures');
REVOKE ALL ON parley.sign_in_failures FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.sign_in_failures TO parley_auth;

DROP FUNCTION IF EXISTS parley.sign_in_key(text, inet);
CREATE OR REPLACE FUNCTION parley.sign_in_key(p_email text, OUT email_key bytea, OUT net inet)
LANGUAGE sql STABLE
SET search_path = ''
AS $$
  SELECT pg_catalog.sha256(pg_catalog.convert_to(lower(btrim(coalesce(p_email, ''))), 'UTF8')),
         CASE WHEN pg_catalog.family(ip) = 6 THEN pg_catalog.network(pg_catalog.set_masklen(ip, 64))::inet
              ELSE pg_catalog.host(ip)::inet END
    FROM parley.current_request_ip() ip
$$;
COMMENT ON FUNCTION parley.sign_in_key(text) IS
  'Internal: the sign-in backoff key of this email at the request''s address: SHA-256 of the trimmed lower-case email, and the client address (its /64 for IPv6, which one client holds whole); net is NULL when the request has no address (unix socket), which nothing is keyed on.';

CREATE OR REPLACE FUNCTION parley.check_sign_in_backoff(p_email text) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $$
DECLARE
  v_until timestamptz;
BEGIN
  SELECT f.blocked_until INTO v_until
    FROM parley.sign_in_failures f, parley.sign_in_key(p_email) k
   WHERE f.email_key = k.email_key AND f.ip = k.net;
  IF v_until > now() THEN
    PERFORM parley.raise_error(429, 'too_many_attempts',
      format('Too many failed sign-ins; try again in %s seconds.', ceil(extract(epoch FROM v_until - now()))::int));
  END IF;
END $$;
COMMENT ON FUNCTION parley.check_sign_in_backoff(text) IS
  'Internal: raise 429 too_many_attempts while this email is in backoff for the request''s address (whether or not an account has the email).';

CREATE OR REPLACE FUNCTION parley.record_sign_in_result(p_email text, p_ok boolean) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = ''
AS $$
DECLARE
  v_key record;
  v_failures int;
BEGIN
  SELECT * INTO v_key FROM parley.sign_in_key(p_email);
  IF v_key.net IS NULL THEN
    RETURN;
  END IF;
  IF p_ok THEN
    DELETE FROM parley.sign_in_failures f WHERE f.email_key = v_key.email_key AND f.ip = v_key.net;
    RETURN;
  END IF;
  INSERT INTO parley.sign_in_failures AS f (email_key, ip, failures, last_failed_at)
  VALUES (v_key.email_key, v_key.net, 1, now())
  ON CONFLICT (email_key, ip) DO UPDATE
     SET failures = CASE WHEN f.last_failed_at < now() - interval '1 hour' THEN 1 ELSE f.failures + 1 END,
         last_failed_at = now()
  RETURNING f.failures INTO v_failures;
  IF v_failures >= 5 THEN
    UPDATE parley.sign_in_failures f
       SET blocked_until = now() + least(interval '1 second' * power(2, least(v_failures - 5, 20)),
                                         interval '15 minutes')
     WHERE f.email_key = v_key.email_key AND f.ip = v_key.net;
  END IF;
END $$;
COMMENT ON FUNCTION parley.record_sign_in_result(text, boolean) IS
  'Internal: a success clears the email''s backoff at the request''s address; a failure counts (restarting after an hour without one), and from the 5th in a row blocks that pair for 2^(n-5) seconds, at most 15 minutes.';

CREATE OR REPLACE FUNCTION parley.prune_sign_in_failures() RETURNS int
LANGUAGE sql VOLATILE
SET search_path = ''
AS $$
  WITH gone AS (
    DELETE FROM parley.sign_in_failures f
     WHERE f.last_failed_at < now() - interval '1 hour' AND coalesce(f.blocked_until, '-infinity') < now()
    RETURNING 1)
  SELECT count(*)::int FROM gone
$$;
COMMENT ON FUNCTION parley.prune_sign_in_failures() IS
  'Internal: forget backoff rows an hour after their last failure (called by prune_auth_tables).';

SELECT parley.secure_functions('parley_auth', NULL,
  'parley.sign_in_key(text)', 'parley.check_sign_in_backoff(text)',
  'parley.record_sign_in_result(text, boolean)', 'parley.prune_sign_in_failures()');
