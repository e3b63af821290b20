-- The SaaS business, second part: referral codes and the credit ledger, custom domains (claims
-- per tenant, the global Host routing of verified ones), per-tenant default widget branding, and
-- the outbox destination kind that applies credits as Stripe customer balance. Rules in
-- sql/94_referrals.sql, sql/95_domains.sql, sql/96_branding.sql.
-- depends: 0019.telegram_inbound

-- A stable share code per tenant (`?ref=<code>` on the sign-up page); random, server-made.
ALTER TABLE parley.tenants
  ADD COLUMN referral_code text NOT NULL DEFAULT substr(replace(gen_random_uuid()::text, '-', ''), 1, 12)
    CHECK (referral_code ~ '^[a-z0-9]{8,32}$');
CREATE UNIQUE INDEX tenants__referral_code_idx ON parley.tenants (referral_code);

-- The referrer's ledger: one row per tenant that signed up with its code (attributed once, in
-- the sign-up transaction), earned when that tenant first pays, capped per referrer. No
-- foreign key to the referred tenant: an earned credit outlives a deleted workspace.
CREATE TABLE parley.referral_credits (
  tenant_id           uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  referred_tenant_id  uuid NOT NULL,
  signed_up_at        timestamptz NOT NULL DEFAULT now(),
  status              text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'earned', 'capped')),
  amount_cents        int NOT NULL DEFAULT 0 CHECK (amount_cents >= 0),
  earned_at           timestamptz,
  earned_plan         text,
  -- The outbox delivery that applies it as Stripe customer balance (NULL until the referrer
  -- has a Stripe customer), and when Stripe confirmed it.
  delivery_id         bigint,
  applied_at          timestamptz,
  PRIMARY KEY (tenant_id, referred_tenant_id)
);
CREATE INDEX referral_credits__tenant_id_status_idx ON parley.referral_credits (tenant_id, status);
-- The referred tenant's conversion finds its one row (a tenant is attributed at most once).
CREATE INDEX referral_credits__referred_tenant_id_idx ON parley.referral_credits (referred_tenant_id);

-- Outbox deliveries to the payment provider (customer balance transactions).
ALTER TABLE parley.outbox_destinations DROP CONSTRAINT outbox_destinations_kind_check;
ALTER TABLE parley.outbox_destinations ADD CONSTRAINT outbox_destinations_kind_check
  CHECK (kind IN ('webhook', 'email', 'slack', 'telegram', 'stripe'));

-- Custom domains (white-label plans): a tenant's claim of a hostname and its DNS check. Several
-- tenants may claim one name; the one that proves it (its own TXT token) gets the route.
CREATE TABLE parley.custom_domains (
  tenant_id        uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  hostname         text NOT NULL CHECK (length(hostname) BETWEEN 4 AND 253 AND hostname = lower(hostname)),
  token            text NOT NULL CHECK (token ~ '^[a-z0-9]{32}$'),
  status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'disabled')),
  created_at       timestamptz NOT NULL DEFAULT now(),
  checked_at       timestamptz,
  check_result     jsonb,
  verified_at      timestamptz,
  activated_by     text CHECK (activated_by IN ('dns', 'staff')),
  disabled_at      timestamptz,
  disabled_reason  text CHECK (length(disabled_reason) <= 200),
  PRIMARY KEY (tenant_id, hostname)
);

-- Host → tenant for active domains only, read before any tenant is known (widget traffic on
-- that Host, the reverse proxy's on-demand TLS question). Written only by parley_auth functions.
CREATE TABLE parley.domain_routes (
  hostname      text PRIMARY KEY,
  tenant_id     uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  activated_at  timestamptz NOT NULL DEFAULT now()
);

-- The workspace's default "Powered by" label and link for its widgets (a chatbot may override
-- it; without either the server's default applies).
CREATE TABLE parley.tenant_branding (
  tenant_id   uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  label       text CHECK (length(label) BETWEEN 1 AND 60),
  url         text CHECK (length(url) <= 2048 AND url ~ '^https?://[^\s/?#]+'),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id)
);
