-- Channel secrets under envelope encryption (pyapp/channels/envelope.py does the cryptography;
-- the database holds only wrapped data keys and sealed secrets, never a key-encryption key).
-- Secrets are written and read by these functions only; no role reads the table directly.

-- Data keys are never changed in place by the app: only added (and re-wrapped by an operator).
SELECT parley.apply_tenant_policies('parley.tenant_data_keys', ARRAY['select', 'insert']);
SELECT parley.apply_tenant_policies('parley.destination_secrets');

REVOKE ALL ON parley.tenant_data_keys, parley.destination_secrets FROM parley_app, parley_jobs;
GRANT SELECT, INSERT ON parley.tenant_data_keys TO parley_app;
GRANT SELECT ON parley.tenant_data_keys TO parley_jobs;
GRANT SELECT, INSERT, UPDATE (expires_at), DELETE ON parley.destination_secrets TO parley_app;
GRANT SELECT ON parley.destination_secrets TO parley_jobs;

CREATE OR REPLACE FUNCTION parley.current_data_key()
RETURNS TABLE (id int, kek_id text, wrapped bytea)
LANGUAGE sql STABLE
AS $$
  SELECT k.id, k.kek_id, k.wrapped FROM parley.tenant_data_keys k
   WHERE k.tenant_id = parley.current_tenant_id() ORDER BY k.id DESC LIMIT 1
$$;
COMMENT ON FUNCTION parley.current_data_key() IS
  'The current tenant''s newest data key, wrapped (the server unwraps it with its key-encryption key); empty before the first secret.';

CREATE OR REPLACE FUNCTION parley.add_data_key(p_kek_id text, p_wrapped bytea)
RETURNS TABLE (id int, kek_id text, wrapped bytea)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  -- The first data key of a tenant; a concurrent first writer wins and both use its key.
  INSERT INTO parley.tenant_data_keys (tenant_id, id, kek_id, wrapped)
  VALUES (parley.current_tenant_id(), 1, p_kek_id, p_wrapped)
  ON CONFLICT DO NOTHING;
  RETURN QUERY SELECT * FROM parley.current_data_key();
END $$;
COMMENT ON FUNCTION parley.add_data_key(text, bytea) IS
  'Store the current tenant''s first data key (wrapped by key-encryption key p_kek_id) unless one exists; returns the current one.';

CREATE OR REPLACE FUNCTION parley.store_channel_secret(p_destination_id uuid, p_purpose text, p_data_key_id int,
                                                      p_sealed bytea, p_hint text, p_overlap interval DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_id uuid;
BEGIN
  PERFORM parley.require_role('admin');
  -- The secrets it replaces stay valid for p_overlap (NULL: they end now).
  UPDATE parley.destination_secrets s
     SET expires_at = now() + coalesce(p_overlap, interval '0')
   WHERE s.tenant_id = parley.current_tenant_id() AND s.destination_id = p_destination_id
     AND s.purpose = p_purpose AND (s.expires_at IS NULL OR s.expires_at > now() + coalesce(p_overlap, interval '0'));
  INSERT INTO parley.destination_secrets (tenant_id, destination_id, purpose, data_key_id, sealed, hint)
  VALUES (parley.current_tenant_id(), p_destination_id, p_purpose, p_data_key_id, p_sealed, left(p_hint, 8))
  RETURNING id INTO v_id;
  -- Expired secrets are of no use to anyone: gone.
  DELETE FROM parley.destination_secrets s
   WHERE s.tenant_id = parley.current_tenant_id() AND s.destination_id = p_destination_id
     AND s.expires_at <= now();
  RETURN v_id;
END $$;
COMMENT ON FUNCTION parley.store_channel_secret(uuid, text, int, bytea, text, interval) IS
  'Admins: store a sealed secret (purpose signing|token) of a destination of the current tenant; the previous ones of that purpose stay valid for p_overlap (rotation), expired ones are deleted.';

CREATE OR REPLACE FUNCTION parley.channel_secrets(p_destination_id uuid, p_purpose text)
RETURNS TABLE (id uuid, data_key_id int, kek_id text, wrapped bytea, sealed bytea, hint text, expires_at timestamptz)
LANGUAGE sql STABLE
AS $$
  SELECT s.id, s.data_key_id, k.kek_id, k.wrapped, s.sealed, s.hint, s.expires_at
    FROM parley.destination_secrets s
    JOIN parley.tenant_data_keys k ON k.tenant_id = s.tenant_id AND k.id = s.data_key_id
   WHERE s.tenant_id = parley.current_tenant_id() AND s.destination_id = p_destination_id
     AND s.purpose = p_purpose AND (s.expires_at IS NULL OR s.expires_at > now())
   ORDER BY s.created_at DESC
$$;
COMMENT ON FUNCTION parley.channel_secrets(uuid, text) IS
  'The valid sealed secrets of a destination of the current tenant, newest first, with their wrapped data keys (for the server or drainer to open).';

CREATE OR REPLACE FUNCTION parley.data_keys_to_rewrap(p_current_kek text)
RETURNS TABLE (tenant_id uuid, id int, kek_id text, wrapped bytea)
LANGUAGE sql STABLE
AS $$
  SELECT k.tenant_id, k.id, k.kek_id, k.wrapped FROM parley.tenant_data_keys k
   WHERE k.kek_id <> p_current_kek ORDER BY k.tenant_id, k.id
$$;
COMMENT ON FUNCTION parley.data_keys_to_rewrap(text) IS
  'Operators (`parley rotate-kek`, admin connection): data keys of every tenant still wrapped by another key-encryption key than p_current_kek.';

CREATE OR REPLACE FUNCTION parley.rewrap_data_key(p_tenant_id uuid, p_id int, p_old_kek text, p_kek_id text,
                                                 p_wrapped bytea)
RETURNS int
LANGUAGE sql VOLATILE
AS $$
  WITH done AS (
    UPDATE parley.tenant_data_keys k SET kek_id = p_kek_id, wrapped = p_wrapped, rewrapped_at = now()
     WHERE k.tenant_id = p_tenant_id AND k.id = p_id AND k.kek_id = p_old_kek
    RETURNING 1)
  SELECT count(*)::int FROM done
$$;
COMMENT ON FUNCTION parley.rewrap_data_key(uuid, int, text, text, bytea) IS
  'Operators: replace one data key''s wrapping (the same key under the current key-encryption key), only if it is still wrapped by p_old_kek; returns 1 or 0.';

CREATE OR REPLACE FUNCTION parley.data_key_by_id(p_id int)
RETURNS TABLE (id int, kek_id text, wrapped bytea)
LANGUAGE sql STABLE
AS $$
  SELECT k.id, k.kek_id, k.wrapped FROM parley.tenant_data_keys k
   WHERE k.tenant_id = parley.current_tenant_id() AND k.id = p_id
$$;
COMMENT ON FUNCTION parley.data_key_by_id(int) IS
  'One data key of the current tenant, wrapped (a secret sealed under an older data key names it); empty when unknown.';

-- Owners and callers (parley.secure_functions, sql/05_access.sql).
SELECT parley.secure_functions(NULL, NULL,
  'parley.data_keys_to_rewrap(text)', 'parley.rewrap_data_key(uuid, int, text, text, bytea)');
