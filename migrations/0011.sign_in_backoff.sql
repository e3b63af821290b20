-- Failed sign-ins per (email, client network), for a backoff that only the guesser meets.
-- The account lock of 0001 (users.failed_logins / locked_until) let anyone lock anyone out from
-- anywhere; it is no longer used. Keyed by the SHA-256 of the normalised email, whether or not
-- an account has it, so unknown and known emails are throttled alike (and the table is no list
-- of addresses). ip is the client address, or its /64 for IPv6. Rules: sql/21_sign_in_throttle.sql.
-- depends: 0006.message_search_index

CREATE TABLE parley.sign_in_failures (
  email_key       bytea NOT NULL,
  ip              inet NOT NULL,
  failures        int NOT NULL DEFAULT 0 CHECK (failures >= 0),
  last_failed_at  timestamptz NOT NULL DEFAULT now(),
  blocked_until   timestamptz,
  PRIMARY KEY (email_key, ip)
);
CREATE INDEX sign_in_failures__last_failed_at_idx ON parley.sign_in_failures (last_failed_at);
