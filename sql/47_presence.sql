-- Presence: which members are online, so a visitor who asks for a person while nobody is there is
-- told so and offered the lead form (the handoff still happens and the alert channels still fire).
-- Online = the member has an agent socket (/ws/agent, the console inbox) or an event stream
-- (/api/events) open on some server instance; each instance keeps its rows fresh
-- (pyapp/realtime/presence.py) and removes them when the member's last stream there closes.

SELECT parley.apply_tenant_policies('parley.member_presence');
GRANT SELECT, INSERT, UPDATE, DELETE ON parley.member_presence TO parley_app;

CREATE OR REPLACE FUNCTION parley.presence_window() RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT interval '90 seconds' $$;
COMMENT ON FUNCTION parley.presence_window() IS
  'How long a presence row counts without being refreshed (instances refresh every 30 s; a dead instance''s rows lapse after this).';
GRANT EXECUTE ON FUNCTION parley.presence_window() TO parley_app;

CREATE OR REPLACE FUNCTION parley.set_presence(p_instance_id text, p_online boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_user uuid := parley.current_user_id();
BEGIN
  -- Only a signed-in member marks itself (API keys and visitors are nobody to talk to).
  IF v_user IS NULL OR parley.current_actor_kind() <> 'user' THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only a signed-in member has a presence.');
  END IF;
  IF p_online THEN
    INSERT INTO parley.member_presence (tenant_id, user_id, instance_id, seen_at)
    VALUES (parley.current_tenant_id(), v_user, p_instance_id, now())
    ON CONFLICT (tenant_id, user_id, instance_id) DO UPDATE SET seen_at = excluded.seen_at;
  ELSE
    DELETE FROM parley.member_presence p
     WHERE p.tenant_id = parley.current_tenant_id() AND p.user_id = v_user AND p.instance_id = p_instance_id;
  END IF;
END $$;
COMMENT ON FUNCTION parley.set_presence(text, boolean) IS
  'The signed-in member is online on this server instance (refreshes seen_at) or no longer (removes the row). 403 for any other actor.';

CREATE OR REPLACE FUNCTION parley.members_online() RETURNS int
LANGUAGE sql STABLE
AS $$
  SELECT count(DISTINCT p.user_id)::int
    FROM parley.member_presence p
   WHERE p.tenant_id = (SELECT parley.current_tenant_id())
     AND p.seen_at > now() - parley.presence_window()
$$;
COMMENT ON FUNCTION parley.members_online() IS
  'How many members of the current tenant are online (an agent socket or event stream refreshed within presence_window()).';
GRANT EXECUTE ON FUNCTION parley.members_online() TO parley_app, parley_jobs;

-- What the human_requested event records about the team (visitor_frame passes it on).
CREATE OR REPLACE FUNCTION parley.handoff_data(p_reason text) RETURNS jsonb
LANGUAGE sql STABLE
AS $$ SELECT jsonb_build_object('reason', p_reason, 'members_online', parley.members_online()) $$;
COMMENT ON FUNCTION parley.handoff_data(text) IS
  'The data of a human_requested event: why (requested, bot_misses) and how many members were online at that moment (0: the widget says nobody is available and offers the lead form).';
GRANT EXECUTE ON FUNCTION parley.handoff_data(text) TO parley_app, parley_jobs;

-- Owners and EXECUTE grants of the functions above (parley.secure_functions, 05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_app}', 'parley.set_presence(text, boolean)');
