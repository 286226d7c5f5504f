-- what each key's prompts spent on paid providers (language models, stock, images, voices) per
-- UTC day, in estimated US dollars: checked against the key's daily provider budget.
ALTER TABLE key_usage ADD COLUMN provider_usd REAL NOT NULL DEFAULT 0;
