-- Placeholder on branch h-console only: version 8 belongs to another change.
-- Drop this file when merging (the real 0008 takes its place; migrations must have no gaps).
SELECT 1;
