-- Placeholder on branch h-i10e only: version 6 belongs to another change of issue 10.
-- Drop this file when merging (the real 0006 takes its place; migrations must have no gaps).
SELECT 1;
