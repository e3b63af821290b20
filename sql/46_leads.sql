-- Leads: captured in a conversation by the visitor, or recorded and worked by members.

SELECT parley.apply_tenant_policies('parley.leads');

-- A visitor transaction sees only the lead of its own conversation (see 41_conversations.sql).
SELECT parley.ensure_policy('parley.leads', 'select_visitor_own', $$AS RESTRICTIVE FOR SELECT
  USING ((SELECT parley.current_actor_kind()) <> 'visitor' OR conversation_id::text = (SELECT parley.current_actor_id()))$$);

GRANT SELECT, INSERT, UPDATE, DELETE ON parley.leads TO parley_app;
GRANT SELECT ON parley.leads TO parley_jobs;

------------------------------------------------------------------------------------------
-- Leads. Status workflow: new → contacted | qualified | lost; contacted → qualified | won | lost;
-- qualified → contacted | won | lost; lost → new (reopened); won is final.

CREATE OR REPLACE FUNCTION parley.check_lead_fields(p_name text, p_email text, p_phone text, p_custom jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF p_email IS NOT NULL AND (length(p_email) > 320 OR p_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$') THEN
    PERFORM parley.raise_error(422, 'invalid_email', 'That email address does not look right.');
  END IF;
  IF p_phone IS NOT NULL AND (length(p_phone) > 50 OR p_phone !~ '^[0-9+()./ -]{3,50}$') THEN
    PERFORM parley.raise_error(422, 'invalid_phone', 'That phone number does not look right.');
  END IF;
  IF p_name IS NOT NULL AND length(p_name) > 200 THEN
    PERFORM parley.raise_error(422, 'invalid_name', 'A name is at most 200 characters.');
  END IF;
  -- The text rule (15_text.sql). A name may span lines (pasted addresses); email and phone may not.
  PERFORM parley.check_text(p_name, 'invalid_name', 'A name');
  PERFORM parley.check_text(p_email, 'invalid_email', 'An email address', true);
  PERFORM parley.check_text(p_phone, 'invalid_phone', 'A phone number', true);
  IF p_custom IS NOT NULL AND (jsonb_typeof(p_custom) <> 'object' OR octet_length(p_custom::text) > 8192) THEN
    PERFORM parley.raise_error(422, 'invalid_custom', 'custom must be a JSON object of at most 8 KiB.');
  END IF;
  -- Custom fields are read by agents like the name: every string value is text, every key a line.
  PERFORM parley.check_text(f.value, 'invalid_custom', 'A custom field', f.is_key)
     FROM (SELECT v #>> '{}' AS value, false AS is_key
             FROM jsonb_path_query(p_custom, 'strict $.** ? (@.type() == "string")') v
           UNION ALL
           SELECT k #>> '{}', true
             FROM jsonb_path_query(p_custom, 'strict $.** ? (@.type() == "object").keyvalue().key') k) f;
END $$;
COMMENT ON FUNCTION parley.check_lead_fields(text, text, text, jsonb) IS 'Validate lead fields (422 with a field-specific code): email (320, a@b.c), phone (50, digits and +()./ -), name (200), the text rule of parley.check_text, custom (an object of at most 8 KiB; its string values held to the text rule, its keys, at any depth, to the one-line rule).';

-- What every path that stores a lead does to its fields first.
CREATE OR REPLACE FUNCTION parley.clean_lead_fields(p_name text, p_email text, p_phone text, p_custom jsonb,
                                                    p_required boolean, OUT name text, OUT email text, OUT phone text)
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  name := parley.clean_text(p_name, 201);
  email := lower(parley.clean_text(p_email, 321));
  phone := parley.clean_text(p_phone, 51);
  IF p_required AND name IS NULL AND email IS NULL AND phone IS NULL THEN
    PERFORM parley.raise_error(422, 'empty_lead', 'Give at least a name, an email or a phone number.');
  END IF;
  PERFORM parley.check_lead_fields(name, email, phone, p_custom);
END $$;
COMMENT ON FUNCTION parley.clean_lead_fields(text, text, text, jsonb, boolean) IS
  'A lead''s name, email and phone as stored: trimmed, empty as NULL, cut one past their limit (so check_lead_fields refuses a longer one), the email in lower case; then check_lead_fields (with p_custom). With p_required, 422 empty_lead when all three are empty.';

CREATE OR REPLACE FUNCTION parley.capture_lead(p_conversation_id uuid, p_name text, p_email text, p_phone text,
                                               p_custom jsonb DEFAULT '{}')
RETURNS parley.leads
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_conv parley.conversations;
  v_lead parley.leads;
  v_f record;
BEGIN
  v_conv := parley.lock_conversation(p_conversation_id);
  v_f := parley.clean_lead_fields(p_name, p_email, p_phone, coalesce(p_custom, '{}'), true);
  -- One lead per conversation: a second form fills in / updates the first.
  INSERT INTO parley.leads AS l (tenant_id, chatbot_id, conversation_id, name, email, phone, custom)
  VALUES (v_conv.tenant_id, v_conv.chatbot_id, v_conv.id, v_f.name, v_f.email, v_f.phone, coalesce(p_custom, '{}'))
  ON CONFLICT (tenant_id, conversation_id) WHERE conversation_id IS NOT NULL DO UPDATE
     SET name = coalesce(EXCLUDED.name, l.name), email = coalesce(EXCLUDED.email, l.email),
         phone = coalesce(EXCLUDED.phone, l.phone), custom = l.custom || EXCLUDED.custom, updated_at = now()
  RETURNING * INTO v_lead;
  PERFORM parley.emit_event('lead_captured', v_conv.id, NULL, jsonb_build_object('lead_id', v_lead.id));
  RETURN v_lead;
END $$;
COMMENT ON FUNCTION parley.capture_lead(uuid, text, text, text, jsonb) IS
  'The lead form of a conversation (visitor of that conversation, or a member): creates the conversation''s lead or updates it (non-empty fields replace, custom merges). 422 on an invalid email/phone or when all are empty. Event lead_captured.';

CREATE OR REPLACE FUNCTION parley.create_lead(p_chatbot_id uuid, p_name text, p_email text, p_phone text,
                                              p_custom jsonb DEFAULT '{}')
RETURNS parley.leads
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_lead parley.leads;
  v_f record;
BEGIN
  PERFORM parley.require_staff();
  v_f := parley.clean_lead_fields(p_name, p_email, p_phone, coalesce(p_custom, '{}'), true);
  IF p_chatbot_id IS NOT NULL THEN
    PERFORM parley.require_live_chatbot(p_chatbot_id);
  END IF;
  INSERT INTO parley.leads (tenant_id, chatbot_id, name, email, phone, custom)
  VALUES (parley.current_tenant_id(), p_chatbot_id, v_f.name, v_f.email, v_f.phone, coalesce(p_custom, '{}'))
  RETURNING * INTO v_lead;
  RETURN v_lead;
END $$;
COMMENT ON FUNCTION parley.create_lead(uuid, text, text, text, jsonb) IS
  'Members: record a lead by hand (no conversation), of a live chatbot of the tenant or of none (404 for a deleted or unknown one). 422 as capture_lead.';

CREATE OR REPLACE FUNCTION parley.leave_lead(p_chatbot_id uuid, p_name text, p_email text, p_phone text,
                                             p_custom jsonb DEFAULT '{}', p_ip inet DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_id uuid := gen_random_uuid();
  v_f record;
BEGIN
  IF parley.current_actor_kind() IS DISTINCT FROM 'visitor' OR parley.current_actor_id() IS NOT NULL THEN
    PERFORM parley.raise_error(403, 'forbidden', 'Only a visitor without a conversation leaves a lead this way.');
  END IF;
  v_f := parley.clean_lead_fields(p_name, p_email, p_phone, coalesce(p_custom, '{}'), true);
  PERFORM parley.require_live_chatbot(p_chatbot_id);
  PERFORM parley.hit_rate_limit('ip', 'lead:' || coalesce(host(p_ip), 'unknown'), l.msgs_per_min_ip)
     FROM parley.effective_limits(parley.current_tenant_id()) l;
  -- No RETURNING: the visitor may not read leads that are not its conversation's.
  INSERT INTO parley.leads (tenant_id, id, chatbot_id, name, email, phone, custom)
  VALUES (parley.current_tenant_id(), v_id, p_chatbot_id, v_f.name, v_f.email, v_f.phone, coalesce(p_custom, '{}'));
  PERFORM parley.emit_event('lead_captured', NULL, NULL, jsonb_build_object('lead_id', v_id));
  RETURN v_id;
END $$;
COMMENT ON FUNCTION parley.leave_lead(uuid, text, text, text, jsonb, inet) IS
  'The widget''s lead form when no conversation could start (a limit was reached): a visitor without a conversation leaves a lead of the chatbot with no conversation. 422 as capture_lead; 429 beyond msgs_per_min_ip leads per address and minute. Event lead_captured (tenant-wide).';

DROP FUNCTION IF EXISTS parley.update_lead(uuid, text, text, text, jsonb);
CREATE OR REPLACE FUNCTION parley.update_lead(p_lead_id uuid, p_name text DEFAULT NULL, p_email text DEFAULT NULL,
                                              p_phone text DEFAULT NULL, p_custom jsonb DEFAULT NULL,
                                              p_status text DEFAULT NULL)
RETURNS parley.leads
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_lead parley.leads;
  v_f record;
BEGIN
  PERFORM parley.require_staff();
  v_f := parley.clean_lead_fields(p_name, p_email, p_phone, p_custom, false);
  UPDATE parley.leads l
     SET name = CASE WHEN p_name IS NULL THEN l.name ELSE v_f.name END,
         email = CASE WHEN p_email IS NULL THEN l.email ELSE v_f.email END,
         phone = CASE WHEN p_phone IS NULL THEN l.phone ELSE v_f.phone END,
         custom = coalesce(p_custom, l.custom), updated_at = now()
   WHERE l.tenant_id = parley.current_tenant_id() AND l.id = p_lead_id
  RETURNING * INTO v_lead;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such lead.');
  END IF;
  IF p_status IS NOT NULL THEN
    v_lead := parley.set_lead_status(p_lead_id, p_status);
  END IF;
  RETURN v_lead;
END $$;
COMMENT ON FUNCTION parley.update_lead(uuid, text, text, text, jsonb, text) IS
  'Members: change a lead''s fields (NULL keeps, empty string clears; custom replaces) and, with p_status, move its status through set_lead_status (409 on an invalid move). 404 when not in this tenant.';

CREATE OR REPLACE FUNCTION parley.set_lead_status(p_lead_id uuid, p_status text)
RETURNS parley.leads
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_lead parley.leads;
BEGIN
  PERFORM parley.require_staff();
  SELECT * INTO v_lead FROM parley.leads l
   WHERE l.tenant_id = parley.current_tenant_id() AND l.id = p_lead_id FOR UPDATE;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such lead.');
  END IF;
  IF p_status IS NULL OR p_status NOT IN ('new', 'contacted', 'qualified', 'won', 'lost') THEN
    PERFORM parley.raise_error(422, 'invalid_status', 'status must be new, contacted, qualified, won or lost.');
  END IF;
  IF v_lead.status = p_status THEN
    RETURN v_lead;
  END IF;
  IF NOT (v_lead.status, p_status) IN (('new', 'contacted'), ('new', 'qualified'), ('new', 'lost'),
                                       ('contacted', 'qualified'), ('contacted', 'won'), ('contacted', 'lost'),
                                       ('qualified', 'contacted'), ('qualified', 'won'), ('qualified', 'lost'),
                                       ('lost', 'new')) THEN
    PERFORM parley.raise_error(409, 'invalid_transition', format('A %s lead cannot become %s.', v_lead.status, p_status));
  END IF;
  UPDATE parley.leads l SET status = p_status, updated_at = now()
   WHERE l.tenant_id = v_lead.tenant_id AND l.id = v_lead.id RETURNING * INTO v_lead;
  RETURN v_lead;
END $$;
COMMENT ON FUNCTION parley.set_lead_status(uuid, text) IS
  'Members: move a lead along new → contacted → qualified → won | lost (lost → new reopens; won is final); other moves 409 invalid_transition, same status is a no-op.';

CREATE OR REPLACE FUNCTION parley.delete_lead(p_lead_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.require_staff();
  DELETE FROM parley.leads l WHERE l.tenant_id = parley.current_tenant_id() AND l.id = p_lead_id;
  IF NOT FOUND THEN
    PERFORM parley.raise_error(404, 'not_found', 'No such lead.');
  END IF;
  PERFORM parley.write_audit('lead.delete', 'lead', p_lead_id::text, '{}');
END $$;
COMMENT ON FUNCTION parley.delete_lead(uuid) IS 'Members: delete a lead (audited).';

-- The one lead export (the API's /api/leads.csv and the console's): its columns are these, in
-- this order; both surfaces write them as CSV with one writer (pyapp/leads/routes.leads_csv).
CREATE OR REPLACE FUNCTION parley.export_leads(
  p_q text DEFAULT NULL, p_status text DEFAULT NULL, p_chatbot_id uuid DEFAULT NULL,
  p_from timestamptz DEFAULT NULL, p_before timestamptz DEFAULT NULL, p_limit int DEFAULT 50000)
RETURNS TABLE (id uuid, created_at timestamptz, status text, name text, email text, phone text,
               chatbot_id uuid, chatbot text, conversation_id uuid, custom jsonb)
LANGUAGE sql STABLE
AS $$
  SELECT l.id, l.created_at, l.status, l.name, l.email, l.phone, l.chatbot_id, b.name, l.conversation_id, l.custom
    FROM parley.leads l
    LEFT JOIN parley.chatbots b ON b.tenant_id = l.tenant_id AND b.id = l.chatbot_id
   WHERE l.tenant_id = (SELECT parley.current_tenant_id())
     AND (p_q IS NULL OR l.name ILIKE '%' || p_q || '%' OR l.email ILIKE '%' || p_q || '%'
          OR l.phone ILIKE '%' || p_q || '%')
     AND (p_status IS NULL OR l.status = p_status)
     AND (p_chatbot_id IS NULL OR l.chatbot_id = p_chatbot_id)
     AND (p_from IS NULL OR l.created_at >= p_from)
     AND (p_before IS NULL OR l.created_at < p_before)
   ORDER BY l.created_at DESC, l.id
   LIMIT least(greatest(coalesce(p_limit, 50000), 1), 100000)
$$;
COMMENT ON FUNCTION parley.export_leads(text, text, uuid, timestamptz, timestamptz, int) IS
  'Members: the leads export, newest first, filtered by search text (name, email, phone), status, chatbot and a creation range [p_from, p_before); at most p_limit (1..100000) rows. Its columns are the CSV''s columns.';

-- Owners and EXECUTE grants of the functions above (parley.secure_functions, 05_access.sql).
SELECT parley.secure_functions(NULL, '{parley_app}',
  'parley.export_leads(text, text, uuid, timestamptz, timestamptz, int)');
