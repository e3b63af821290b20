-- Sign in with OpenID Connect: identities linked to people, pending sign-ins, SSO sessions,
-- and the per-workspace "require SSO" switch.
-- depends: 0006.message_search_index

-- A person's identity at an identity provider: (issuer, subject) is what the provider
-- guarantees stable; the email is what it said last (for the profile page only).
CREATE TABLE parley.user_identities (
  issuer        text NOT NULL CHECK (length(issuer) BETWEEN 1 AND 500),
  subject       text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
  user_id       uuid NOT NULL REFERENCES parley.users(id) ON DELETE CASCADE,
  provider      text NOT NULL CHECK (provider ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
  email         text CHECK (length(email) <= 320),
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_used_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (issuer, subject)
);
CREATE INDEX user_identities__user_id_idx ON parley.user_identities (user_id);

-- A sign-in started and not yet finished. Only the SHA-256 of the state is stored; the PKCE
-- verifier and the nonce are derived from the state with the server's key, so neither is
-- stored. `binding_hash` ties the state to the browser that started it (a cookie), so a
-- callback link planted in another browser signs nobody in.
CREATE TABLE parley.oidc_logins (
  state_hash    bytea PRIMARY KEY,
  provider      text NOT NULL,
  binding_hash  bytea NOT NULL,
  next_path     text NOT NULL DEFAULT '/console/' CHECK (length(next_path) <= 500),
  link_user_id  uuid REFERENCES parley.users(id) ON DELETE CASCADE,
  created_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz NOT NULL
);
CREATE INDEX oidc_logins__expires_at_idx ON parley.oidc_logins (expires_at);

-- Sessions (refresh-token families) opened by an identity provider: "require SSO" lets only
-- these into the workspace.
CREATE TABLE parley.sso_sessions (
  family_id   uuid PRIMARY KEY,
  user_id     uuid NOT NULL REFERENCES parley.users(id) ON DELETE CASCADE,
  issuer      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sso_sessions__user_id_idx ON parley.sso_sessions (user_id);

ALTER TABLE parley.tenants ADD COLUMN require_sso boolean NOT NULL DEFAULT false;
