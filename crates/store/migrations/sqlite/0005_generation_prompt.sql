-- generations made from a prompt keep the request, the plan, each scene's picture source and
-- the provider cost ledger (JSON; NULL for storyboards sent as they are).
ALTER TABLE generations ADD COLUMN prompt TEXT;
