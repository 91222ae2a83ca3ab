-- motcua: one-time PostgreSQL setup for an installation (run as a superuser):
--
--     sudo -u postgres psql -v ON_ERROR_STOP=1 -f deploy/postgres/setup.sql
--
-- Creates the login role `motcua` and the database `motcua` owned by it. The services apply
-- their own schema migrations when they start (sqlx migrations, recorded in
-- `_sqlx_migrations`), so nothing else needs to be created here: point the services at
--
--     [database]
--     url = "postgres://motcua:<password>@<host>:5432/motcua"
--
-- Local development (`cargo xtask run`) does not use this file: it connects as `postgres`
-- and creates the `motcua` database itself.
--
-- Server settings that matter (postgresql.conf; check with `SHOW <name>;`):
--
--   synchronous_commit = on   (the default) A command is acknowledged only after its events
--                             are flushed to the WAL on disk. Do not turn it off: an event the
--                             intake service has confirmed to a counter clerk must survive a
--                             crash. With a synchronous standby, `remote_apply` or `on` plus
--                             synchronous_standby_names also protects against losing the primary.
--   fsync = on, full_page_writes = on   (the defaults) Never turn these off.
--   wal_level = replica       (the default) Enough for streaming replication and base backups
--                             (pg_basebackup, PITR with archive_mode/archive_command). Use
--                             `logical` only if you add logical decoding; the services publish
--                             to NATS themselves (relay-service), they do not need it.
--   max_connections           Each service opens up to `database.max_connections` (16 by
--                             default) connections; keep the sum across services well below it.
--
-- Immutability of the event log: the migrations install a trigger that makes the `events`
-- table refuse UPDATE and DELETE, so an application bug or a mistaken statement cannot rewrite
-- history. It is a guard rail, not a proof: a superuser can still bypass it (ALTER TABLE ...
-- DISABLE TRIGGER, session_replication_role = replica, or by editing the data files), and so
-- can the table's owner, the role that ran the migrations. That is why every event also
-- carries a hash chain (each event's hash covers the previous one's): a rewrite after the fact
-- breaks the chain and verification detects it. Keep `motcua` without SUPERUSER, keep
-- superuser access to a few people, and keep copies of recent chain heads outside this
-- database (NATS consumers, backups) so a rewritten chain cannot simply be recomputed unseen.

\set ON_ERROR_STOP on

-- Change the password before running this (or afterwards with \password motcua).
CREATE ROLE motcua LOGIN PASSWORD 'CHANGE-ME-motcua-password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;

CREATE DATABASE motcua OWNER motcua ENCODING 'UTF8' TEMPLATE template0;

-- Only the owner (and superusers) may connect; PUBLIC gets nothing by default.
REVOKE ALL ON DATABASE motcua FROM PUBLIC;

\connect motcua

-- The services create their tables in the public schema: make `motcua` own it so migrations
-- can run, and keep everyone else out.
ALTER SCHEMA public OWNER TO motcua;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
