-- Sign-in backoff per (email, client network): the guesser slows down, the account's owner
-- elsewhere does not. Five failures in a row from one network for one email are free; after
-- that each failure blocks that pair for 1, 2, 4, ... seconds, at most 15 minutes; a success
-- from there clears it, an hour without failures forgets it. The same for emails no account
-- has, so the answers do not tell which accounts exist. (The per-address throttle across all
-- emails, throttle_auth_attempt, is in 22_sessions.sql.) Table: migration 0011.

ALTER TABLE parley.sign_in_failures ENABLE ROW LEVEL SECURITY;
ALTER TABLE parley.sign_in_failures FORCE ROW LEVEL SECURITY;
REVOKE ALL ON parley.sign_in_failures FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.sign_in_failures TO parley_auth;

CREATE OR REPLACE FUNCTION parley.sign_in_key(p_email text, p_ip inet, OUT email_key bytea, OUT net inet)
LANGUAGE sql IMMUTABLE
SET search_path = ''
AS $$
  SELECT pg_catalog.sha256(pg_catalog.convert_to(lower(btrim(coalesce(p_email, ''))), 'UTF8')),
         CASE WHEN pg_catalog.family(p_ip) = 6 THEN pg_catalog.network(pg_catalog.set_masklen(p_ip, 64))::inet
              ELSE pg_catalog.host(p_ip)::inet END
$$;
COMMENT ON FUNCTION parley.sign_in_key(text, inet) IS
  'Internal: the sign-in backoff key: SHA-256 of the trimmed lower-case email, and the client address (its /64 for IPv6, which one client holds whole).';

CREATE OR REPLACE FUNCTION parley.check_sign_in_backoff(p_email text) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $$
DECLARE
  v_ip inet := parley.current_request_ip();
  v_until timestamptz;
BEGIN
  IF v_ip IS NULL THEN
    RETURN;
  END IF;
  SELECT f.blocked_until INTO v_until
    FROM parley.sign_in_failures f, parley.sign_in_key(p_email, v_ip) k
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
  v_ip inet := parley.current_request_ip();
  v_key record;
  v_failures int;
BEGIN
  IF v_ip IS NULL THEN
    RETURN;
  END IF;
  SELECT * INTO v_key FROM parley.sign_in_key(p_email, v_ip);
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

DO $$
DECLARE
  v_fn text;
BEGIN
  FOREACH v_fn IN ARRAY ARRAY[
    'parley.sign_in_key(text, inet)', 'parley.check_sign_in_backoff(text)',
    'parley.record_sign_in_result(text, boolean)', 'parley.prune_sign_in_failures()']
  LOOP
    EXECUTE format('ALTER FUNCTION %s OWNER TO parley_auth', v_fn);
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_fn);
  END LOOP;
END $$;
