-- The contributions are written whole and read whole, as text, by the projection alone (apply,
-- rebuild, verify; nothing queries inside them). `jsonb` parsed every row written into its
-- binary form, every number through `numeric_in`, and printed it back as text for every read:
-- in a rebuild, PostgreSQL's parsing of the contributions' `COPY` took about a third of the
-- machine's CPU while the log was read. `json` keeps the text as written, checked to be JSON,
-- and takes about two thirds of the space.
--
-- Rewrites the table once (about 5 s per 250,000 dossiers of ~1 KB on the 2-core bench machine). The
-- figures do not change: every reader parses the text with `serde_json` whatever its layout.
ALTER TABLE projection_contributions
    ALTER COLUMN contribution TYPE json USING contribution::json;
