-- The staff back-office: who is staff (bootstrapped from PARLEY_ADMIN_EMAILS) and suspended tenants.
-- depends: 0014.billing

-- Staff are people whose verified email is listed here; the server writes the list from its
-- configuration at start (parley.sync_staff_emails).
CREATE TABLE parley.staff_emails (
  email     text PRIMARY KEY CHECK (email = lower(email) AND length(email) <= 320),
  added_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE parley.tenants ADD COLUMN suspended_at timestamptz;
