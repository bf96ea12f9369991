-- Placeholder on branch h-i10e only: version 5 belongs to another change of issue 10.
-- Drop this file when merging (the real 0005 takes its place; migrations must have no gaps).
SELECT 1;
