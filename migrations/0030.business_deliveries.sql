-- The SaaS business, third part: overage reports travel through the outbox (the delivery that
-- carries each day's meter event), custom domains are re-checked after they went active (a
-- 'failing' state with its grace before they are disabled), and the server's default widget
-- branding can come from the environment. Rules in sql/91_metering.sql, sql/95_domains.sql,
-- sql/96_branding.sql.
-- depends: 0029.system_texts 0022.business 0014.billing

-- The outbox delivery (kind billing.meter_event, destination kind stripe) that reports this
-- day's overage; NULL until queued. reported_at is set when Stripe accepted it.
ALTER TABLE parley.usage_reports ADD COLUMN delivery_id bigint;
CREATE INDEX usage_reports__tenant_id_unqueued_idx ON parley.usage_reports (tenant_id, day)
  WHERE reported_at IS NULL AND delivery_id IS NULL;

-- Re-verification of active domains: a failed re-check moves an active domain to 'failing'
-- (still served) until it proves ownership again or its grace ends (then 'disabled').
ALTER TABLE parley.custom_domains DROP CONSTRAINT custom_domains_status_check;
ALTER TABLE parley.custom_domains ADD CONSTRAINT custom_domains_status_check
  CHECK (status IN ('pending', 'active', 'failing', 'disabled'));
ALTER TABLE parley.custom_domains
  ADD COLUMN failing_since  timestamptz,
  ADD COLUMN failed_checks  int NOT NULL DEFAULT 0 CHECK (failed_checks >= 0);
CREATE INDEX custom_domains__tenant_id_recheck_idx ON parley.custom_domains (tenant_id, checked_at)
  WHERE status IN ('active', 'failing');

-- Installation settings a server writes from its environment at start (e.g. PARLEY_BRANDING_LABEL),
-- read by the SQL that resolves them; no tenant data, written only by parley_auth functions.
CREATE TABLE parley.server_settings (
  name        text PRIMARY KEY CHECK (name ~ '^[a-z_]{1,60}$'),
  value       text NOT NULL CHECK (length(value) <= 2048),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
