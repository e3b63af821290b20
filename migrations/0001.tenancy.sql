-- Tenancy: tenants, global user identities, memberships, invites, API keys,
-- refresh-token sessions, settings and the audit log.
-- depends:

CREATE TABLE parley.plans (
  id          text PRIMARY KEY,
  name        text NOT NULL,
  sort_order  int  NOT NULL DEFAULT 0
);

CREATE TABLE parley.tenants (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  slug        text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
  name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  plan        text NOT NULL DEFAULT 'free' REFERENCES parley.plans(id),
  created_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz
);
CREATE UNIQUE INDEX tenants__slug_idx ON parley.tenants (slug);

CREATE TABLE parley.users (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email              text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 320),
  name               text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
  password_hash      text NOT NULL,
  email_verified_at  timestamptz,
  failed_logins      int  NOT NULL DEFAULT 0,
  locked_until       timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users__lower_email_idx ON parley.users (lower(email));

CREATE TABLE parley.members (
  tenant_id   uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  user_id     uuid NOT NULL REFERENCES parley.users(id) ON DELETE CASCADE,
  role        text NOT NULL CHECK (role IN ('owner', 'admin', 'agent')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX members__user_id_idx ON parley.members (user_id);

CREATE TABLE parley.invites (
  tenant_id    uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  id           uuid NOT NULL DEFAULT gen_random_uuid(),
  email        text NOT NULL CHECK (length(email) <= 320),
  role         text NOT NULL CHECK (role IN ('owner', 'admin', 'agent')),
  token_hash   bytea NOT NULL,
  invited_by   uuid REFERENCES parley.users(id) ON DELETE SET NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  accepted_at  timestamptz,
  accepted_by  uuid REFERENCES parley.users(id) ON DELETE SET NULL,
  revoked_at   timestamptz,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, token_hash)
);
CREATE INDEX invites__token_hash_idx ON parley.invites (token_hash);

CREATE TABLE parley.api_keys (
  tenant_id     uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  id            uuid NOT NULL DEFAULT gen_random_uuid(),
  name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  prefix        text NOT NULL,
  key_hash      bytea NOT NULL,
  scopes        text[] NOT NULL DEFAULT '{}',
  created_by    uuid REFERENCES parley.users(id) ON DELETE SET NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_used_at  timestamptz,
  expires_at    timestamptz,
  revoked_at    timestamptz,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, key_hash)
);
CREATE INDEX api_keys__key_hash_idx ON parley.api_keys (key_hash);

-- Sessions belong to a person, not a tenant: one login can switch between tenants.
CREATE TABLE parley.refresh_tokens (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  family_id   uuid NOT NULL,
  user_id     uuid NOT NULL REFERENCES parley.users(id) ON DELETE CASCADE,
  token_hash  bytea NOT NULL UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  used_at     timestamptz,
  revoked_at  timestamptz
);
CREATE INDEX refresh_tokens__family_id_idx ON parley.refresh_tokens (family_id);
CREATE INDEX refresh_tokens__user_id_idx ON parley.refresh_tokens (user_id);

CREATE TABLE parley.password_resets (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id     uuid NOT NULL REFERENCES parley.users(id) ON DELETE CASCADE,
  token_hash  bytea NOT NULL UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  used_at     timestamptz
);

-- Per-address throttle for sign-in attempts, so guessing across many accounts is slowed too.
CREATE TABLE parley.login_throttle (
  ip            inet NOT NULL,
  window_start  timestamptz NOT NULL,
  attempts      int NOT NULL DEFAULT 0,
  PRIMARY KEY (ip, window_start)
);

CREATE TABLE parley.tenant_settings (
  tenant_id   uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  key         text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_.]{0,63}$'),
  value       jsonb NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, key)
);

-- Append-only, partitioned by month so retention is a partition drop.
CREATE TABLE parley.audit_log (
  tenant_id    uuid NOT NULL,
  id           bigint GENERATED ALWAYS AS IDENTITY,
  at           timestamptz NOT NULL DEFAULT now(),
  actor_kind   text NOT NULL CHECK (actor_kind IN ('user', 'api_key', 'system', 'visitor')),
  actor_id     text,
  action       text NOT NULL,
  target_kind  text,
  target_id    text,
  ip           inet,
  request_id   text,
  details      jsonb NOT NULL DEFAULT '{}',
  PRIMARY KEY (tenant_id, at, id)
) PARTITION BY RANGE (at);
CREATE INDEX audit_log__tenant_id_id_idx ON parley.audit_log (tenant_id, id DESC);
CREATE TABLE parley.audit_log_default PARTITION OF parley.audit_log DEFAULT;
