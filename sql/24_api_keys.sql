-- API keys: created by admins (the key is generated in Python; only its SHA-256 is stored),
-- listed, revoked. begin_request (21_auth.sql) resolves a key to its tenant and scopes.

CREATE OR REPLACE FUNCTION parley.api_key_json(p_key_id uuid) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object('id', k.id, 'name', k.name, 'prefix', k.prefix, 'scopes', to_jsonb(k.scopes),
                            'created_by', k.created_by, 'created_at', k.created_at,
                            'last_used_at', k.last_used_at, 'expires_at', k.expires_at,
                            'revoked_at', k.revoked_at)
    FROM parley.api_keys k WHERE k.id = p_key_id
$$;
COMMENT ON FUNCTION parley.api_key_json(uuid) IS 'An API key of the current workspace (RLS) as clients see it: never the hash.';

CREATE OR REPLACE FUNCTION parley.create_api_key(
  p_name text, p_prefix text, p_key_hash bytea, p_scopes text[], p_expires_at timestamptz) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_id uuid;
BEGIN
  PERFORM parley.require_role('admin');
  IF p_scopes IS NULL OR cardinality(p_scopes) = 0 OR NOT p_scopes <@ ARRAY['read', 'write'] THEN
    PERFORM parley.raise_error(422, 'invalid_scopes', 'Scopes must be a non-empty subset of read, write.');
  END IF;
  IF p_expires_at IS NOT NULL AND p_expires_at <= now() THEN
    PERFORM parley.raise_error(422, 'invalid_expiry', 'The expiry must be in the future.');
  END IF;
  INSERT INTO parley.api_keys (tenant_id, name, prefix, key_hash, scopes, created_by, expires_at)
  VALUES (parley.current_tenant_id(), p_name, p_prefix, p_key_hash,
          ARRAY(SELECT DISTINCT s FROM unnest(p_scopes) s ORDER BY s), parley.current_user_id(), p_expires_at)
  RETURNING id INTO v_id;
  RETURN parley.api_key_json(v_id);
END $$;
COMMENT ON FUNCTION parley.create_api_key(text, text, bytea, text[], timestamptz) IS
  'Store a new API key of the current workspace (admin+) by its hash; the key itself is shown once by the server. Scopes ⊆ {read, write}, expiry in the future.';

CREATE OR REPLACE FUNCTION parley.list_api_keys() RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  RETURN coalesce((
    SELECT jsonb_agg(parley.api_key_json(k.id) ORDER BY k.created_at DESC, k.id)
      FROM parley.api_keys k), '[]'::jsonb);
END $$;
COMMENT ON FUNCTION parley.list_api_keys() IS 'API keys of the current workspace, newest first, revoked ones included (admin+).';

CREATE OR REPLACE FUNCTION parley.revoke_api_key(p_key_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  UPDATE parley.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = p_key_id;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such API key.');
  END IF;
  RETURN parley.api_key_json(p_key_id);
END $$;
COMMENT ON FUNCTION parley.revoke_api_key(uuid) IS 'Revoke an API key of the current workspace (admin+); idempotent; 404 when there is none.';
-- Invoker functions: run under RLS in the tenant transaction, by the server.
SELECT parley.secure_functions(NULL, '{parley_app}', 'parley.api_key_json(uuid)',
  'parley.create_api_key(text, text, bytea, text[], timestamptz)', 'parley.list_api_keys()', 'parley.revoke_api_key(uuid)');
