-- Bot turns as claims in the database, not in the memory of the server that stored the question
-- (bench/faults.py: a server killed between a question and its answer left the question silent for
-- good). One row per visitor message the bot owes an answer, written in that message's own
-- transaction and deleted in the transaction that ends the turn (the answer, a notice, the handoff,
-- or silence). The server running a turn holds a lease it renews; a turn whose lease ran out is
-- picked up by another server. The rules: sql/53_bot_turns.sql.
-- depends: 0037.conversation_transitions

CREATE TABLE parley.bot_turns (
  tenant_id        uuid NOT NULL,
  question_id      bigint NOT NULL,            -- the visitor message (parley.messages.id)
  conversation_id  uuid NOT NULL,
  asked_at         timestamptz NOT NULL DEFAULT now(),
  attempts         int NOT NULL DEFAULT 1 CHECK (attempts >= 1),  -- runs begun: the first, then pick-ups
  leased_by        text CHECK (length(leased_by) <= 200),       -- NULL: the server that stored the question
  leased_until     timestamptz,                 -- NULL: asked_at + the lease
  PRIMARY KEY (tenant_id, question_id),
  FOREIGN KEY (tenant_id, conversation_id) REFERENCES parley.conversations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX bot_turns__tenant_id_conversation_id_question_id_idx
  ON parley.bot_turns (tenant_id, conversation_id, question_id);
