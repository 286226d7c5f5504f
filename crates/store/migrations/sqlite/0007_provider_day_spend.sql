-- what the whole server spent on each paid provider per UTC day, in estimated US dollars, over
-- every key: checked against the provider's daily budget ([providers.x] daily_budget_usd).
CREATE TABLE provider_usage (
    provider TEXT NOT NULL,
    day BIGINT NOT NULL,
    usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, day)
);
