-- rolegate schema 2: the shared rate limiter when there is no Redis.

-- UNLOGGED: hit counts are disposable (lost on a crash, never replicated) and written on hot paths.
CREATE UNLOGGED TABLE rate_windows (
    key        text NOT NULL,              -- "<window seconds>:<caller's key>"
    window_end double precision NOT NULL,  -- Unix seconds
    hits       bigint NOT NULL,
    PRIMARY KEY (key, window_end)
);
CREATE INDEX rate_windows_end ON rate_windows (window_end);
