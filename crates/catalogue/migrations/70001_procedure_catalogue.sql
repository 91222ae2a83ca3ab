-- The procedure catalogue (crates/catalogue): every published version of every procedure,
-- append-only. A change is a new row with who and when; rows are never updated or deleted, so
-- the catalogue in force at any past instant can always be read again. Dossiers do not depend
-- on it when replayed: the `received` event stores the version and rules it used.
--
-- Versions 70001 and up belong to the catalogue.

CREATE TABLE procedure_versions (
    version        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code           text        NOT NULL,
    effective_from timestamptz NOT NULL,
    -- catalogue::Procedure as JSON (the definition, effective_from included).
    definition     jsonb       NOT NULL,
    recorded_by    text        NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The only lookup: the version of a code in force at an instant.
CREATE INDEX procedure_versions_in_force
    ON procedure_versions (code, effective_from DESC, version DESC);

CREATE FUNCTION procedure_versions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'procedure_versions is append-only';
END
$$;

CREATE TRIGGER procedure_versions_no_update BEFORE UPDATE OR DELETE ON procedure_versions
    FOR EACH ROW EXECUTE FUNCTION procedure_versions_append_only();
CREATE TRIGGER procedure_versions_no_truncate BEFORE TRUNCATE ON procedure_versions
    FOR EACH STATEMENT EXECUTE FUNCTION procedure_versions_append_only();
