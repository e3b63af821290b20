-- Members and invites: the role a transaction acts with, inviting people, the member list,
-- role changes and removal (the last owner is protected by a trigger).

---------------------------------------------------------------------------------------------
-- The acting role
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.current_member_role() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.role', true), '') $$;
COMMENT ON FUNCTION parley.current_member_role() IS
  'Role begin_request resolved for this tenant transaction (owner, admin, agent; admin for API keys), or NULL.';

CREATE OR REPLACE FUNCTION parley.actor_role_rank() RETURNS int
LANGUAGE sql STABLE
AS $$ SELECT parley.role_rank(coalesce(parley.current_member_role(), '')) $$;
COMMENT ON FUNCTION parley.actor_role_rank() IS 'role_rank of the role begin_request resolved for this transaction (-1 when none): the one reading of the acting role''s rank.';

CREATE OR REPLACE FUNCTION parley.require_role(p_min_role text) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_role text := parley.current_member_role();
BEGIN
  IF parley.actor_role_rank() < parley.role_rank(p_min_role) THEN
    PERFORM parley.raise_error(403, 'forbidden', format('This needs the %s role.', p_min_role));
  END IF;
  RETURN v_role;
END $$;
COMMENT ON FUNCTION parley.require_role(text) IS
  'Raise 403 unless the transaction''s role is at least p_min_role; returns the role. Functions re-check the route gate so the rule holds for any caller.';
---------------------------------------------------------------------------------------------
-- Invites
---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parley.invite_json(p_invite_id uuid) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object(
    'id', i.id, 'email', i.email, 'role', i.role, 'invited_by', i.invited_by,
    'created_at', i.created_at, 'expires_at', i.expires_at, 'accepted_at', i.accepted_at,
    'accepted_by', i.accepted_by, 'revoked_at', i.revoked_at,
    'status', CASE WHEN i.accepted_at IS NOT NULL THEN 'accepted'
                   WHEN i.revoked_at IS NOT NULL THEN 'revoked'
                   WHEN i.expires_at <= now() THEN 'expired'
                   ELSE 'pending' END)
    FROM parley.invites i WHERE i.id = p_invite_id
$$;
COMMENT ON FUNCTION parley.invite_json(uuid) IS
  'An invite of the current workspace (RLS) as clients see it, with its status; never the token hash.';

CREATE OR REPLACE FUNCTION parley.create_invite(p_email text, p_role text, p_token_hash bytea) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_role text := parley.require_role('admin');
  v_tenant uuid := parley.current_tenant_id();
  v_id uuid;
BEGIN
  IF parley.role_rank(p_role) < parley.role_rank('agent') THEN
    PERFORM parley.raise_error(422, 'invalid_role', 'The role must be owner, admin or agent.');
  END IF;
  IF parley.role_rank(p_role) > parley.role_rank(v_role) THEN
    PERFORM parley.raise_error(403, 'role_too_high', 'You cannot invite someone to a role above your own.');
  END IF;
  IF EXISTS (SELECT 1 FROM parley.members m WHERE m.tenant_id = v_tenant AND m.user_id = parley.user_by_email(p_email)) THEN
    PERFORM parley.raise_error(409, 'already_member', 'That person is already a member.');
  END IF;
  -- One live invite per address: a new one replaces any pending one.
  UPDATE parley.invites SET revoked_at = now()
   WHERE tenant_id = v_tenant AND lower(email) = lower(btrim(p_email))
     AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now();
  INSERT INTO parley.invites (tenant_id, email, role, token_hash, invited_by, expires_at)
  VALUES (v_tenant, btrim(p_email), p_role, p_token_hash, parley.current_user_id(), now() + interval '7 days')
  RETURNING id INTO v_id;
  RETURN parley.invite_json(v_id)
      || jsonb_build_object('tenant_name', (SELECT t.name FROM parley.tenants t WHERE t.id = v_tenant));
END $$;
COMMENT ON FUNCTION parley.create_invite(text, text, bytea) IS
  'Invite an email to the current workspace (admin+): single-use token (hash stored), 7-day expiry, replaces a pending invite for the same address. Nobody invites above their own role, so only owners invite owners. Returns the invite plus tenant_name for the email.';

CREATE OR REPLACE FUNCTION parley.list_invites() RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  RETURN coalesce((
    SELECT jsonb_agg(parley.invite_json(i.id) ORDER BY i.created_at DESC, i.id)
      FROM parley.invites i), '[]'::jsonb);
END $$;
COMMENT ON FUNCTION parley.list_invites() IS 'Every invite of the current workspace, newest first, with status (admin+).';

CREATE OR REPLACE FUNCTION parley.revoke_invite(p_invite_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_role('admin');
  UPDATE parley.invites SET revoked_at = coalesce(revoked_at, now())
   WHERE id = p_invite_id AND accepted_at IS NULL;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such pending invite.');
  END IF;
  RETURN parley.invite_json(p_invite_id);
END $$;
COMMENT ON FUNCTION parley.revoke_invite(uuid) IS 'Revoke a not yet accepted invite of the current workspace (admin+); 404 when there is none.';

CREATE OR REPLACE FUNCTION parley.accept_invite(p_token_hash bytea) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_user uuid := parley.require_signed_in();
  v_invite parley.invites%ROWTYPE;
BEGIN
  SELECT i.* INTO v_invite FROM parley.invites i
    JOIN parley.tenants t ON t.id = i.tenant_id AND t.deleted_at IS NULL
   WHERE i.token_hash = p_token_hash
   FOR UPDATE OF i;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'invite_not_found', 'This invite does not exist.');
  ELSIF v_invite.accepted_at IS NOT NULL THEN
    PERFORM parley.raise_error(410, 'invite_used', 'This invite has already been used.');
  ELSIF v_invite.revoked_at IS NOT NULL THEN
    PERFORM parley.raise_error(410, 'invite_revoked', 'This invite was revoked.');
  ELSIF v_invite.expires_at <= now() THEN
    PERFORM parley.raise_error(410, 'invite_expired', 'This invite has expired.');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM parley.users u WHERE u.id = v_user AND lower(u.email) = lower(v_invite.email)) THEN
    PERFORM parley.raise_error(403, 'invite_email_mismatch', 'This invite was sent to another email address.');
  END IF;
  IF EXISTS (SELECT 1 FROM parley.members m WHERE m.tenant_id = v_invite.tenant_id AND m.user_id = v_user) THEN
    PERFORM parley.raise_error(409, 'already_member', 'You are already a member of this workspace.');
  END IF;
  PERFORM set_config('app.tenant_id', v_invite.tenant_id::text, true);
  UPDATE parley.invites SET accepted_at = now(), accepted_by = v_user
   WHERE tenant_id = v_invite.tenant_id AND id = v_invite.id;
  INSERT INTO parley.members (tenant_id, user_id, role) VALUES (v_invite.tenant_id, v_user, v_invite.role);
  RETURN jsonb_build_object('tenant', parley.tenant_json(v_invite.tenant_id, v_user));
END $$;
COMMENT ON FUNCTION parley.accept_invite(bytea) IS
  'Join a workspace with an invite token: the signed-in person''s email must match (case-insensitive); single use, not revoked or expired (410), not already a member (409). Definer: the person is not in the tenant yet.';

---------------------------------------------------------------------------------------------
-- Members
---------------------------------------------------------------------------------------------

-- The last owner rule lives on the table so no path (function, direct DML) can break it.
CREATE OR REPLACE FUNCTION parley.protect_last_owner() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_name text;
BEGIN
  IF OLD.role = 'owner' AND (TG_OP = 'DELETE' OR NEW.role <> 'owner') THEN
    -- Serialise owner changes of one tenant on its row (FOR NO KEY UPDATE does not block the
    -- KEY SHARE locks of foreign-key checks), then count the owners left in a fresh snapshot.
    -- When the tenant row itself is being deleted (cascade) there is nothing to protect.
    -- A workspace deleted (in its grace period before the purge) needs no owner either: its
    -- sole owner may leave it or delete their account.
    SELECT t.name INTO v_name FROM parley.tenants t
     WHERE t.id = OLD.tenant_id AND t.deleted_at IS NULL FOR NO KEY UPDATE;
    IF FOUND AND NOT EXISTS (SELECT 1 FROM parley.members m
                              WHERE m.tenant_id = OLD.tenant_id AND m.role = 'owner'
                                AND m.user_id <> OLD.user_id) THEN
      PERFORM parley.raise_error(409, 'last_owner',
        format('%s needs at least one owner: make someone else an owner first, or delete the workspace.', v_name));
    END IF;
  END IF;
  IF TG_OP = 'DELETE' THEN
    RETURN OLD;
  END IF;
  RETURN NEW;
END $$;
COMMENT ON FUNCTION parley.protect_last_owner() IS
  'BEFORE UPDATE/DELETE trigger on members, the one sole-owner rule (leaving, removal, demotion, account deletion): refuse (409 last_owner) to demote or remove the last owner of a live tenant (a deleted one awaiting its purge needs none); concurrent changes serialise on the tenant row.';
SELECT parley.ensure_trigger('parley.members', 't10_protect_last_owner', 'BEFORE UPDATE OF role OR DELETE',
  $$FOR EACH ROW EXECUTE FUNCTION parley.protect_last_owner()$$);

CREATE OR REPLACE FUNCTION parley.member_json(p_user_id uuid) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT jsonb_build_object('user_id', m.user_id, 'email', u.email, 'name', u.name,
                            'role', m.role, 'created_at', m.created_at)
    FROM parley.members m JOIN parley.users u ON u.id = m.user_id
   WHERE m.user_id = p_user_id
$$;
COMMENT ON FUNCTION parley.member_json(uuid) IS 'A member of the current workspace (RLS) with their email and name.';

CREATE OR REPLACE FUNCTION parley.list_members() RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(jsonb_agg(parley.member_json(m.user_id) ORDER BY parley.role_rank(m.role) DESC, u.email), '[]'::jsonb)
    FROM parley.members m JOIN parley.users u ON u.id = m.user_id
$$;
COMMENT ON FUNCTION parley.list_members() IS 'Members of the current workspace (RLS), each as member_json, owners first.';

CREATE OR REPLACE FUNCTION parley.check_member_change(p_user_id uuid, p_new_role text) RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_mine text := parley.current_member_role();
  v_self boolean := p_user_id = parley.current_user_id();
  v_theirs text;
BEGIN
  SELECT m.role INTO v_theirs FROM parley.members m WHERE m.user_id = p_user_id FOR UPDATE;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such member.');
  END IF;
  IF v_self AND p_new_role IS NULL THEN
    RETURN v_theirs;  -- anyone may leave (the last owner trigger still applies)
  END IF;
  IF parley.role_rank(v_mine) < parley.role_rank('admin') THEN
    PERFORM parley.raise_error(403, 'forbidden', 'This needs the admin role.');
  END IF;
  IF v_theirs = 'owner' AND v_mine <> 'owner' THEN
    PERFORM parley.raise_error(403, 'cannot_modify_owner', 'Only owners can change or remove an owner.');
  END IF;
  IF p_new_role IS NOT NULL AND parley.role_rank(p_new_role) > parley.role_rank(v_mine) THEN
    PERFORM parley.raise_error(403, 'role_too_high', 'You cannot give a role above your own.');
  END IF;
  RETURN v_theirs;
END $$;
COMMENT ON FUNCTION parley.check_member_change(uuid, text) IS
  'Shared rules of change_member_role/remove_member: the member exists here (404), admins+ change others, only owners touch owners, nobody grants above their own role; anyone may remove themselves. Locks the member row.';

CREATE OR REPLACE FUNCTION parley.change_member_role(p_user_id uuid, p_role text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  IF parley.role_rank(p_role) < parley.role_rank('agent') THEN
    PERFORM parley.raise_error(422, 'invalid_role', 'The role must be owner, admin or agent.');
  END IF;
  PERFORM parley.check_member_change(p_user_id, p_role);
  UPDATE parley.members SET role = p_role WHERE user_id = p_user_id AND role <> p_role;
  RETURN parley.member_json(p_user_id);
END $$;
COMMENT ON FUNCTION parley.change_member_role(uuid, text) IS
  'Change a member''s role in the current workspace under the member rules (check_member_change) and the last-owner trigger.';

CREATE OR REPLACE FUNCTION parley.remove_member(p_user_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.check_member_change(p_user_id, NULL);
  DELETE FROM parley.members WHERE user_id = p_user_id;
END $$;
COMMENT ON FUNCTION parley.remove_member(uuid) IS
  'Remove a member from the current workspace (or leave it yourself) under the member rules and the last-owner trigger; their access tokens for it stop working at once.';
---------------------------------------------------------------------------------------------
-- Ownership and grants
---------------------------------------------------------------------------------------------

-- accept_invite crosses tenants for one person: owned by parley_auth, run by the server only.
SELECT parley.secure_functions('parley_auth', '{parley_app}', 'parley.accept_invite(bytea)');

-- Invoker functions: run under RLS in the tenant transaction.
SELECT parley.secure_functions(NULL, '{parley_app, parley_jobs, parley_auth}',
  'parley.current_member_role()', 'parley.require_role(text)');
SELECT parley.secure_functions(NULL, '{parley_app}',
  'parley.invite_json(uuid)', 'parley.create_invite(text, text, bytea)', 'parley.list_invites()',
  'parley.revoke_invite(uuid)', 'parley.protect_last_owner()', 'parley.member_json(uuid)', 'parley.list_members()',
  'parley.check_member_change(uuid, text)', 'parley.change_member_role(uuid, text)', 'parley.remove_member(uuid)');
