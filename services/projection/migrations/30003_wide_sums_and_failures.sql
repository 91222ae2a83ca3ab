-- Sums that cannot overflow, and failed applies that cannot go unseen.
--
-- 1. `stats_rollup.value` becomes `numeric` (exact integers of any size): a cell sums the
--    deltas of any number of dossiers, and payment amounts (up to 10^15 VND each) summed over
--    a province's dossiers pass `bigint`'s 9.2 × 10^18. Every existing value converts exactly;
--    the table is rewritten once (ACCESS EXCLUSIVE while it runs). The projection reads and
--    writes the values as `i128`, which no sum of a log of `bigint` positions can exceed.
ALTER TABLE stats_rollup ALTER COLUMN value TYPE numeric;

-- 2. Dossiers whose apply failed and has not yet succeeded since. The consumer writes a row
--    (in a transaction of its own, after the failed apply was rolled back) on every failed
--    attempt, and deletes it when the dossier applies. While a row exists the dossier's figures
--    are missing: the service reports NOT_SERVING and `projection verify` lists it.
CREATE TABLE projection_failures (
    dossier_id      text        PRIMARY KEY,
    attempts        bigint      NOT NULL CHECK (attempts > 0),
    first_failed_at timestamptz NOT NULL,
    last_failed_at  timestamptz NOT NULL,
    last_error      text        NOT NULL
);
