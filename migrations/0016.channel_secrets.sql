-- Envelope encryption of channel secrets (webhook signing secrets, bot tokens): one data key per
-- tenant, stored only wrapped by a key-encryption key that lives in the environment (never in
-- the database), and the secrets sealed with that data key (AES-GCM, tenant and channel as
-- associated data). A dump holds ciphertext only.
-- depends: 0009.outbox

CREATE TABLE parley.tenant_data_keys (
  tenant_id     uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  id            int NOT NULL CHECK (id >= 1),
  -- Which key-encryption key wrapped it (PARLEY_KEKS id, or 'derived-v1' from the secret key).
  kek_id        text NOT NULL CHECK (length(kek_id) BETWEEN 1 AND 100),
  wrapped       bytea NOT NULL CHECK (length(wrapped) BETWEEN 40 AND 200),
  created_at    timestamptz NOT NULL DEFAULT now(),
  rewrapped_at  timestamptz,
  PRIMARY KEY (tenant_id, id)
);
-- Key rotation finds the data keys still wrapped by an old key-encryption key.
CREATE INDEX tenant_data_keys__kek_id_idx ON parley.tenant_data_keys (kek_id);

CREATE TABLE parley.destination_secrets (
  tenant_id       uuid NOT NULL,
  id              uuid NOT NULL DEFAULT gen_random_uuid(),
  destination_id  uuid NOT NULL,
  purpose         text NOT NULL CHECK (purpose IN ('signing', 'token')),
  data_key_id     int NOT NULL,
  -- 12-byte nonce || AES-256-GCM ciphertext and tag.
  sealed          bytea NOT NULL CHECK (length(sealed) BETWEEN 29 AND 4096),
  -- A few last characters, to tell secrets apart in the console (never enough to use).
  hint            text CHECK (length(hint) <= 8),
  created_at      timestamptz NOT NULL DEFAULT now(),
  -- Set when a newer secret replaces it: until then both are valid (rotation overlap).
  expires_at      timestamptz,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, destination_id) REFERENCES parley.outbox_destinations (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, data_key_id) REFERENCES parley.tenant_data_keys (tenant_id, id)
);
CREATE INDEX destination_secrets__tenant_id_destination_id_created_at_idx
  ON parley.destination_secrets (tenant_id, destination_id, created_at DESC);
