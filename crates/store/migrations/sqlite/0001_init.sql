-- Corral's store schema on SQLite. Each row keeps its whole value as JSON in `data`;
-- the other columns are copies of the fields that are filtered, ordered or compared
-- on, so SQL does reads, writes and compare-and-set and nothing else.

CREATE TABLE lrps (
    name       TEXT    NOT NULL PRIMARY KEY,
    domain     TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    data       TEXT    NOT NULL
);
CREATE INDEX lrps_domain ON lrps (domain);

-- presence is 0 ORDINARY, 1 EVACUATING, 2 SUSPECT: numbers, so rows order as the model
-- orders them.
CREATE TABLE instances (
    lrp        TEXT    NOT NULL,
    idx        INTEGER NOT NULL,
    presence   INTEGER NOT NULL,
    domain     TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    cell_id    TEXT,
    generation INTEGER NOT NULL,
    data       TEXT    NOT NULL,
    PRIMARY KEY (lrp, idx, presence)
);
CREATE INDEX instances_cell ON instances (cell_id);
CREATE INDEX instances_state ON instances (state);

CREATE TABLE tasks (
    id         TEXT    NOT NULL PRIMARY KEY,
    domain     TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    cell_id    TEXT,
    created_at INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    data       TEXT    NOT NULL
);
CREATE INDEX tasks_created ON tasks (created_at, id);
CREATE INDEX tasks_state ON tasks (state);
CREATE INDEX tasks_domain ON tasks (domain);
CREATE INDEX tasks_cell ON tasks (cell_id);

-- expires_at NULL: fresh forever.
CREATE TABLE domains (
    name       TEXT    NOT NULL PRIMARY KEY,
    expires_at INTEGER
);

CREATE TABLE locks (
    key        TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    fence      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX locks_expires ON locks (expires_at);

-- The last event sequence number and the last fencing token handed out. Kept apart
-- from the rows they number so that pruning events or releasing locks never lets a
-- number be handed out twice.
CREATE TABLE counters (
    name  TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('event_seq', 0), ('fence', 0);

CREATE TABLE events (
    seq  INTEGER NOT NULL PRIMARY KEY,
    kind TEXT    NOT NULL,
    at   INTEGER NOT NULL,
    data TEXT    NOT NULL
);
