-- priority is a per-key entitlement; each key signs its webhooks with its own secret.
ALTER TABLE api_keys ADD COLUMN max_priority INTEGER NOT NULL DEFAULT 5;
ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT;
