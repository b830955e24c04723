-- For a cluster source: the slots the node served and its config epoch
-- when its current scan pass started (JSON). A node that gained slots, or
-- whose epoch moved, since then may have received keys behind its cursor,
-- so it is scanned again. NULL for a standalone source.
ALTER TABLE cursors ADD COLUMN node_layout TEXT;
