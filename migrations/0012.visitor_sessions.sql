-- Conversations start when the visitor speaks: a widget session alone writes nothing. Two
-- limits keep one address from filling a tenant's open-conversation allowance: open
-- conversations per client address, and conversations started per minute per chatbot
-- (rules in sql/42_limits.sql; 0 = unlimited, tenant_limits NULL inherits the plan).
-- depends: 0006.message_search_index

ALTER TABLE parley.plans
  ADD COLUMN max_open_conversations_per_ip int NOT NULL DEFAULT 5  CHECK (max_open_conversations_per_ip >= 0),
  ADD COLUMN conversations_per_min_chatbot int NOT NULL DEFAULT 30 CHECK (conversations_per_min_chatbot >= 0);

ALTER TABLE parley.tenant_limits
  ADD COLUMN max_open_conversations_per_ip int CHECK (max_open_conversations_per_ip >= 0),
  ADD COLUMN conversations_per_min_chatbot int CHECK (conversations_per_min_chatbot >= 0);

-- The per-address count at each conversation start: open conversations of one address.
CREATE INDEX conversations__tenant_id_ip_open_idx ON parley.conversations (tenant_id, ip)
  WHERE status <> 'closed';
