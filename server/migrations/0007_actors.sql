-- gesync schema, step 7: the Automerge actors and who owns them, as a view a DBA can read.
--
-- Every change in a record's Automerge document is made by an actor (an id a phone or the
-- server picks). The server binds each actor to the user and device that first pushed changes
-- with it, and refuses another device's changes made under it: this is how an edit in a
-- document is traced back to a person (a reviewer's resolution is made under an actor bound to
-- the reviewer). A view over the keyspace, as those of step 6.
--
-- Not granted to gesync_reporting: it ties each edit in a document to a person.
--
-- The key read (record_rows.rs owns it):
--   'x/{actor, hex}'   the actor's owner: JSON {"username": …, "device_id": …}

CREATE VIEW gesync.actors AS
SELECT convert_from(substr(k, 3), 'UTF8') AS actor,
       o->>'username' AS username,
       o->>'device_id' AS device_id
  FROM (SELECT k, convert_from(v, 'UTF8')::JSONB AS o FROM gesync.kv WHERE k >= 'x/'::BYTEA AND k < 'x0'::BYTEA) AS x;
COMMENT ON VIEW gesync.actors IS 'Each Automerge actor (the id under which changes to a record''s document are made) and the user and device it belongs to: the first to push changes with it';
