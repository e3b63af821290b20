-- Billing: the plan catalog's prices and allowances, subscriptions, plan changes, usage
-- warnings, provider event dedupe and metered-usage reports; more rate-limit scopes.
-- depends: 0006.message_search_index

-- The catalog: prices in USD cents (annual = 10 months), extra seats, monthly allowances
-- (metered past them on paid plans, hard caps on plans without overage) and the new
-- per-minute windows. 0 = unlimited, as for the other limits.
ALTER TABLE parley.plans
  ADD COLUMN price_monthly_cents        int NOT NULL DEFAULT 0 CHECK (price_monthly_cents >= 0),
  ADD COLUMN price_annual_cents         int GENERATED ALWAYS AS (price_monthly_cents * 10) STORED,
  ADD COLUMN seat_price_cents           int NOT NULL DEFAULT 0 CHECK (seat_price_cents >= 0),
  ADD COLUMN max_extra_seats            int NOT NULL DEFAULT 0 CHECK (max_extra_seats >= 0),
  ADD COLUMN public                     boolean NOT NULL DEFAULT true,
  ADD COLUMN metered                    boolean NOT NULL DEFAULT false,
  ADD COLUMN included_conversations     int NOT NULL DEFAULT 0 CHECK (included_conversations >= 0),
  ADD COLUMN included_ai_messages       int NOT NULL DEFAULT 0 CHECK (included_ai_messages >= 0),
  ADD COLUMN overage_cents_per_100      int NOT NULL DEFAULT 0 CHECK (overage_cents_per_100 >= 0),
  ADD COLUMN msgs_per_min_tenant        int NOT NULL DEFAULT 0 CHECK (msgs_per_min_tenant >= 0),
  ADD COLUMN msgs_per_min_conversation  int NOT NULL DEFAULT 0 CHECK (msgs_per_min_conversation >= 0),
  ADD COLUMN api_requests_per_min       int NOT NULL DEFAULT 0 CHECK (api_requests_per_min >= 0),
  ADD COLUMN allow_custom_domain        boolean NOT NULL DEFAULT false;

ALTER TABLE parley.tenant_limits
  ADD COLUMN included_conversations     int CHECK (included_conversations >= 0),
  ADD COLUMN included_ai_messages       int CHECK (included_ai_messages >= 0),
  ADD COLUMN msgs_per_min_tenant        int CHECK (msgs_per_min_tenant >= 0),
  ADD COLUMN msgs_per_min_conversation  int CHECK (msgs_per_min_conversation >= 0),
  ADD COLUMN api_requests_per_min       int CHECK (api_requests_per_min >= 0);

ALTER TABLE parley.rate_counters DROP CONSTRAINT rate_counters_scope_check;
ALTER TABLE parley.rate_counters ADD CONSTRAINT rate_counters_scope_check
  CHECK (scope IN ('chatbot', 'ip', 'tenant', 'conversation', 'api_key'));

-- Staff actions (the back-office) are audited with their own actor kind.
ALTER TABLE parley.audit_log DROP CONSTRAINT audit_log_actor_kind_check;
ALTER TABLE parley.audit_log ADD CONSTRAINT audit_log_actor_kind_check
  CHECK (actor_kind IN ('user', 'api_key', 'system', 'visitor', 'service', 'staff'));

-- One subscription per tenant: what it pays for and where the payment stands. A tenant
-- without a row is on its tenants.plan with nothing to pay (Free, or assigned by staff).
CREATE TABLE parley.subscriptions (
  tenant_id             uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  provider              text NOT NULL DEFAULT 'none' CHECK (provider IN ('none', 'stripe', 'staff')),
  plan                  text NOT NULL REFERENCES parley.plans(id),
  billing_interval      text NOT NULL DEFAULT 'month' CHECK (billing_interval IN ('month', 'year')),
  status                text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'trialing', 'past_due', 'unpaid', 'canceled', 'incomplete')),
  current_period_start  timestamptz,
  current_period_end    timestamptz,
  extra_seats           int NOT NULL DEFAULT 0 CHECK (extra_seats >= 0),
  cancel_at_period_end  boolean NOT NULL DEFAULT false,
  grace_until           timestamptz,
  limited_at            timestamptz,
  customer_ref          text CHECK (length(customer_ref) <= 255),
  subscription_ref      text CHECK (length(subscription_ref) <= 255),
  provider_synced_at    timestamptz,
  updated_at            timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id)
);

-- Every plan change, whoever made it (webhook, staff, the tenant's own downgrade, dunning).
CREATE TABLE parley.plan_changes (
  tenant_id    uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  id           bigint GENERATED ALWAYS AS IDENTITY,
  at           timestamptz NOT NULL DEFAULT now(),
  from_plan    text NOT NULL,
  to_plan      text NOT NULL,
  billing_interval text,
  source       text NOT NULL CHECK (source IN ('checkout', 'webhook', 'staff', 'downgrade', 'dunning')),
  actor_kind   text NOT NULL,
  PRIMARY KEY (tenant_id, id)
);

-- Soft warnings (80 % and 100 % of an allowance), once per tenant, period, metric and
-- threshold; notified_at is set by whoever mails the owners (the outbox when it exists).
CREATE TABLE parley.usage_warnings (
  tenant_id     uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  period_start  date NOT NULL,
  metric        text NOT NULL,
  threshold     smallint NOT NULL CHECK (threshold IN (80, 100)),
  used          bigint NOT NULL,
  allowance     bigint NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  notified_at   timestamptz,
  PRIMARY KEY (tenant_id, period_start, metric, threshold)
);
CREATE INDEX usage_warnings__tenant_id_pending_idx ON parley.usage_warnings (tenant_id, created_at)
  WHERE notified_at IS NULL;

-- Provider events already applied (deduplicated on the provider's event id).
CREATE TABLE parley.billing_events (
  tenant_id    uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  event_id     text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
  type         text NOT NULL,
  created      timestamptz NOT NULL,
  received_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, event_id)
);

-- Metered overage reported to the provider: one row per tenant, period, metric and finished
-- day; `identifier` is the idempotency key sent with it, so a resend bills once.
CREATE TABLE parley.usage_reports (
  tenant_id     uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  period_start  date NOT NULL,
  metric        text NOT NULL CHECK (metric IN ('conversations', 'ai_messages')),
  day           date NOT NULL,
  quantity      bigint NOT NULL CHECK (quantity >= 0),
  identifier    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  reported_at   timestamptz,
  PRIMARY KEY (tenant_id, period_start, metric, day)
);
