-- troupe_expect_rows(n) returns n, or fails the statement when n is 0. A
-- write that must change a row is sent as
--   WITH changed AS (UPDATE … RETURNING 1) SELECT troupe_expect_rows(count(*)) FROM changed
-- so that when it changes none the server itself ends the transaction,
-- and whatever was sent behind it (COMMIT too) does not run: a transaction
-- goes to the server in one round trip (store/postgres/pipetx.go).
CREATE OR REPLACE FUNCTION troupe_expect_rows(n bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
	IF n = 0 THEN
		RAISE EXCEPTION 'troupe: the write changed no row' USING ERRCODE = 'TR001';
	END IF;
	RETURN n;
END
$$;
