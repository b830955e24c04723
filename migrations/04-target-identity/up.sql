-- The target's primaries when the job started (JSON list of node, address
-- and run_id). A target whose primaries answer with other run_ids later
-- restarted or failed over and may have lost what it held, so the job
-- copies everything again rather than trust its journal.
ALTER TABLE job ADD COLUMN target_nodes TEXT;
