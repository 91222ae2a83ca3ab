-- Every insert into procedure_versions notifies `motcua_catalogue` at its commit, whoever
-- inserts (a service's publication, an operator's psql): the services' cached catalogues
-- (crates/catalogue/src/cache.rs) forget what they hold when it arrives. One notification per
-- statement; PostgreSQL folds identical notifications of one transaction into one.

CREATE FUNCTION procedure_versions_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('motcua_catalogue', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER procedure_versions_published AFTER INSERT ON procedure_versions
    FOR EACH STATEMENT EXECUTE FUNCTION procedure_versions_notify();
