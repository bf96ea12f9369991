-- Placeholder on branch h-i10b only: version 4 belongs to another change of issue 10.
-- Drop this file when merging (the real 0004 takes its place; migrations must have no gaps).
SELECT 1;
