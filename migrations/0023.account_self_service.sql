-- Account self-service: e-mail verification links (also used to confirm a changed address).
-- depends: 0006.message_search_index

-- One-time verification tokens; only their SHA-256 is stored. `email` is the address the link
-- was sent to: the account's own (verify) or a new one (change, applied only when the link is used).
CREATE TABLE parley.email_verifications (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id     uuid NOT NULL REFERENCES parley.users(id) ON DELETE CASCADE,
  email       text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 320),
  token_hash  bytea NOT NULL UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  used_at     timestamptz
);
CREATE INDEX email_verifications__user_id_idx ON parley.email_verifications (user_id);
