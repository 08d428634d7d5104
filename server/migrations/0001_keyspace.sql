-- gesync schema, step 1: the keyspace.
--
-- Everything the server keeps, laid out as the embedded store lays it out: one ordered table of
-- (key, value) bytes, and the one row that every write transaction of every replica locks
-- first (see ARCHITECTURE.md, "PostgreSQL"). The keyspace is the truth; the tables of step 2
-- are read from it.
--
-- A database set up before the `gesync` schema existed has these two tables in `public`
-- (`gesync_kv`, `gesync_write_lock`): they move into the schema, data and all, and the old
-- migration table goes. Stop every replica before `migrate`: an older server looks for the
-- tables where they were.

CREATE SCHEMA IF NOT EXISTS gesync;
REVOKE ALL ON SCHEMA gesync FROM PUBLIC;

DO $$
BEGIN
    IF to_regclass('public.gesync_kv') IS NOT NULL THEN
        ALTER TABLE public.gesync_kv SET SCHEMA gesync;
        ALTER TABLE gesync.gesync_kv RENAME TO kv;
        ALTER TABLE public.gesync_write_lock SET SCHEMA gesync;
        ALTER TABLE gesync.gesync_write_lock RENAME TO write_lock;
        DROP TABLE IF EXISTS public.gesync_migrations;
    ELSE
        CREATE TABLE gesync.kv (k BYTEA PRIMARY KEY, v BYTEA NOT NULL);
        CREATE TABLE gesync.write_lock (id INT PRIMARY KEY);
        INSERT INTO gesync.write_lock VALUES (1);
    END IF;
END
$$;

COMMENT ON TABLE gesync.kv IS 'The store''s ordered keyspace (documents, feed, accounts, figures, audit): written by the server only';
COMMENT ON TABLE gesync.write_lock IS 'One row, locked FOR UPDATE by every write transaction: writes run one at a time across replicas';
