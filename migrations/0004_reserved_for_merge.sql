-- Placeholder on branch h-hooks only: version 4 belongs to another change of wave 2.
-- Drop this file when merging (the real 0004 takes its place; migrations must have no gaps).
SELECT 1;
