-- Placeholder on branch h-hooks only: version 6 belongs to another change of wave 2.
-- Drop this file when merging (the real 0006 takes its place; migrations must have no gaps).
SELECT 1;
