-- Top and unanswered questions from a daily rollup too (issue 17, finding 9): per chatbot, day
-- and normalised question, how often asked and how often ungrounded. Written by the rollup job
-- with daily_stats; rules in sql/60_statistics.sql.
-- depends: 0027.conversations_created_at_index

CREATE TABLE parley.daily_questions (
  tenant_id      uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  day            date NOT NULL,
  chatbot_id     uuid NOT NULL,
  question_norm  text NOT NULL,
  asked          int NOT NULL,
  unanswered     int NOT NULL,
  last_asked     timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, day, chatbot_id, question_norm)
);
