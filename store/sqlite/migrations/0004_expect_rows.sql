-- Version 4 adds troupe_expect_rows to PostgreSQL (see its 0004). SQLite
-- runs each statement as it comes, so the store reads how many rows a
-- write changed itself; the two schemas keep the same version numbers.
SELECT 1;
