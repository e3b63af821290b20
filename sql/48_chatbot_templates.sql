-- Chatbot templates: five personas (support, sales, FAQ, booking, product guide), defined once in
-- parley.chatbot_templates (seeded by migration 0026) and applied by one function, for the API
-- (POST /api/chatbots with "template", POST /api/chatbots/{id}/template) and the console
-- (onboarding and chatbot settings), which both call these handlers.

GRANT SELECT ON parley.chatbot_templates TO parley_app;

CREATE OR REPLACE FUNCTION parley.list_chatbot_templates()
RETURNS TABLE (key text, title text, description text, config jsonb)
LANGUAGE sql STABLE
AS $$ SELECT t.key, t.title, t.description, t.config FROM parley.chatbot_templates t ORDER BY t.position, t.key $$;
COMMENT ON FUNCTION parley.list_chatbot_templates() IS
  'The chatbot templates in display order: key, title, one-line description and the config they apply.';
GRANT EXECUTE ON FUNCTION parley.list_chatbot_templates() TO parley_app;

CREATE OR REPLACE FUNCTION parley.apply_chatbot_template(p_chatbot_id uuid, p_template text)
RETURNS parley.chatbots
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_config jsonb;
  v_before jsonb;
  v_row parley.chatbots;
BEGIN
  PERFORM parley.require_role('admin');
  SELECT t.config INTO v_config FROM parley.chatbot_templates t WHERE t.key = p_template;
  IF v_config IS NULL THEN
    PERFORM parley.raise_error(422, 'unknown_template', format('No template %s.', left(coalesce(p_template, 'null'), 40)));
  END IF;
  SELECT c.config INTO v_before FROM parley.chatbots c
   WHERE c.tenant_id = parley.current_tenant_id() AND c.id = p_chatbot_id AND c.deleted_at IS NULL;
  -- What the template sets replaces the chatbot's own (persona, greeting, starters, their texts
  -- per language, handoff, lead capture); everything else (branding, origins, nudges) stays.
  v_row := parley.update_chatbot(p_chatbot_id, NULL, NULL, v_config);
  PERFORM parley.write_audit('chatbot.apply_template', 'chatbot', v_row.id::text,
                             jsonb_build_object('template', p_template,
                                                'before', (SELECT jsonb_object_agg(k, v_before->k)
                                                             FROM jsonb_object_keys(v_config) k
                                                            WHERE v_before ? k)));
  RETURN v_row;
END $$;
COMMENT ON FUNCTION parley.apply_chatbot_template(uuid, text) IS
  'Admin: apply a template to a live chatbot: its config keys (persona, greeting, starters, texts per language, handoff, lead_capture) replace the chatbot''s, the rest is kept (update_chatbot''s merge and checks). Audited with the template and the replaced values. 422 unknown_template, 404 when the chatbot is missing.';
REVOKE ALL ON FUNCTION parley.apply_chatbot_template(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.apply_chatbot_template(uuid, text) TO parley_app;
