-- The actions registry (issue 12 §4): what can be done to a conversation, by whom, in which
-- state, with which input, through which SQL function, and on which surfaces. One catalog
-- for every surface (REST, console, Telegram keyboard and commands, the widget); the rows
-- are seeded by sql/57_actions.sql on every migrate, the rules that read them live there too.
-- depends: 0029.system_texts

-- Product data, the same for every tenant (a reference table, like chatbot_templates).
CREATE TABLE parley.conversation_action_catalog (
  key           text PRIMARY KEY CHECK (key ~ '^[a-z][a-z_]{1,31}$'),
  position      int NOT NULL,
  roles         text[] NOT NULL,   -- who may: visitor, agent, admin, owner (API keys act as admin)
  states        text[] NOT NULL,   -- the conversation statuses it is offered in
  input         jsonb NOT NULL CHECK (jsonb_typeof(input) = 'object'),  -- JSON Schema of its input object
  function      text,              -- the SQL function perform_action calls, as a signature; NULL: done by
                                   -- the surface itself (the widget's "new conversation")
  args          text[] NOT NULL DEFAULT '{}',  -- the input properties passed after the conversation id, in order
  surfaces      text[] NOT NULL,   -- telegram_keyboard, telegram_command, console, widget, api
  needs_person  boolean NOT NULL DEFAULT false,  -- a signed-in person (not an API key)
  assignee_only boolean NOT NULL DEFAULT false   -- when assigned: the assignee or an admin
);

-- Its labels per language (the five widget languages, like system_text_defaults).
CREATE TABLE parley.conversation_action_labels (
  action  text NOT NULL REFERENCES parley.conversation_action_catalog (key) ON DELETE CASCADE,
  locale  text NOT NULL CHECK (locale ~ '^[a-z]{2}$'),
  label   text NOT NULL CHECK (length(label) BETWEEN 1 AND 64),
  done    text CHECK (length(done) BETWEEN 1 AND 100),  -- said when it is done (a Telegram button's answer)
  PRIMARY KEY (action, locale)
);
