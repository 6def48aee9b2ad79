-- The replicas serving now, each with a fingerprint of the settings every replica must
-- share, so one started with others (a different throttle rule, another signing key) is
-- told apart. A replica renews its row while it serves and removes it as it stops.
CREATE TABLE replicas (
    instance TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    seen_at_ms INTEGER NOT NULL
);
