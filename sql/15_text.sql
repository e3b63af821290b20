-- Text rules: the one home of what text a person may store (messages, lead fields, names) and
-- of the message length limits. pyapp/types.py holds the same rule for early 422s; a test
-- (tests/foundation/test_text_rules.py) checks it equals this one, code point by code point.
--
-- Refused, never stripped (a silently changed message or name would mislead the reader):
--  * C0 and C1 control characters (U+0001-U+001F, U+007F-U+009F); "text" fields keep tab,
--    newline and carriage return, "line" fields (names, titles, emails) keep none;
--  * bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): they can
--    make a message or a name read differently from what it says.
-- NUL and unpaired surrogates never reach SQL (text and jsonb cannot hold them; the API and
-- the sockets answer 422 or an error frame first).

CREATE OR REPLACE FUNCTION parley.unsafe_text(p_value text, p_line boolean DEFAULT false) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT p_value ~ CASE WHEN p_line THEN '[\u0001-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]'
                        ELSE '[\u0001-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]' END
$$;
COMMENT ON FUNCTION parley.unsafe_text(text, boolean) IS
  'Whether text holds a character people may not store: a control character (for p_line, tab/newline/CR too) or a bidirectional embedding, override or isolate. NULL for NULL.';

CREATE OR REPLACE FUNCTION parley.check_text(p_value text, p_code text, p_what text, p_line boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  IF parley.unsafe_text(p_value, p_line) THEN
    PERFORM parley.raise_error(422, p_code, format('%s must not contain control or text-direction characters.', p_what));
  END IF;
END $$;
COMMENT ON FUNCTION parley.check_text(text, text, text, boolean) IS
  'Raise 422 <p_code> when parley.unsafe_text(p_value, p_line): the SQL guard behind every text field people fill in.';

CREATE OR REPLACE FUNCTION parley.message_body_max(p_author text) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN p_author IN ('bot', 'system') THEN 16000 ELSE 4000 END $$;
COMMENT ON FUNCTION parley.message_body_max(text) IS
  'Longest message body, in characters, by author: 4000 from people (visitor, agent, note), 16000 from the bot and system notices (the messages.body CHECK is the 16000).';

GRANT EXECUTE ON FUNCTION parley.unsafe_text(text, boolean), parley.check_text(text, text, text, boolean),
  parley.message_body_max(text) TO parley_app, parley_jobs, parley_auth;

-- Names people read (a person, a workspace, a chatbot, an API key) are one line of text: every
-- path that writes one (sign-up, settings, the chatbot and key functions, the demo, staff) meets
-- this trigger, so the rule does not depend on which function or route stored the name. Their
-- lengths are the tables' CHECKs; pyapp/types.py (line, Name100) and pyapp/accounts/models.py
-- answer the same 422 before SQL for the API's fields.
CREATE OR REPLACE FUNCTION parley.check_name_text() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  PERFORM parley.check_text(NEW.name, 'invalid_name', TG_ARGV[0], true);
  RETURN NEW;
END $$;
COMMENT ON FUNCTION parley.check_name_text() IS
  'BEFORE INSERT/UPDATE OF name trigger (argument: what the name is, for the message): 422 invalid_name when the name breaks the one-line text rule (parley.unsafe_text(name, true)).';

DO $$
DECLARE
  v record;
BEGIN
  FOR v IN SELECT * FROM (VALUES ('parley.users', 'A person''s name'), ('parley.tenants', 'A workspace name'),
                                 ('parley.chatbots', 'A chatbot name'), ('parley.api_keys', 'An API key name')) t(tbl, what)
  LOOP
    PERFORM parley.ensure_trigger(v.tbl::regclass, 't05_check_name_text', 'BEFORE INSERT OR UPDATE OF name',
                                  format('FOR EACH ROW EXECUTE FUNCTION parley.check_name_text(%L)', v.what));
  END LOOP;
END $$;
REVOKE ALL ON FUNCTION parley.check_name_text() FROM PUBLIC;
