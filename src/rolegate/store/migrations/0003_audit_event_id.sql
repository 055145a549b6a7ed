-- rolegate schema 3: an audit event's id is stored once, whatever the network did to the commit.

-- A batch whose commit was acknowledged by the server but whose answer was lost (the connection
-- dropped mid-commit) is retried by the writer: the appender looks the batch's ids up here under the
-- chain lock and skips those already stored, and the unique index makes a second copy impossible
-- even then. Rows written before this migration (or by an older instance during a rolling upgrade)
-- have NULL, which the index ignores.
ALTER TABLE audit ADD COLUMN event_id text;
CREATE UNIQUE INDEX audit_event_id ON audit (event_id) WHERE event_id IS NOT NULL;
