-- rolegate schema 1: documents, counters, audit chain (mirrors the SQLite store's schema).

-- COLLATE "C": keys sort and compare by code point, like SQLite, so list(prefix) ranges agree.
CREATE TABLE kv (
    namespace  text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    value      jsonb NOT NULL,
    version    bigint NOT NULL,
    expires_at double precision,            -- Unix seconds; NULL = never
    PRIMARY KEY (namespace, key)
);
CREATE INDEX kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE counters (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);

-- Append-only hash chain; seq has no sequence object: appenders hold a lock and take tail + 1.
CREATE TABLE audit (
    seq       bigint PRIMARY KEY,
    ts        double precision NOT NULL,
    kind      text NOT NULL,
    body      text NOT NULL,
    prev_hash text NOT NULL,
    hash      text NOT NULL
);
CREATE INDEX audit_ts ON audit (ts);
CREATE INDEX audit_kind_seq ON audit (kind, seq);
