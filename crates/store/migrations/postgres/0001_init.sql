-- Corral's store schema on PostgreSQL: the same tables as on SQLite. Keys and sort
-- columns use the "C" collation so rows order by bytes, as they do on SQLite and in
-- the in-memory store, whatever the database's default collation is.

CREATE TABLE lrps (
    name       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    domain     TEXT COLLATE "C" NOT NULL,
    generation BIGINT NOT NULL,
    data       TEXT   NOT NULL
);
CREATE INDEX lrps_domain ON lrps (domain);

-- presence is 0 ORDINARY, 1 EVACUATING, 2 SUSPECT.
CREATE TABLE instances (
    lrp        TEXT COLLATE "C" NOT NULL,
    idx        BIGINT   NOT NULL,
    presence   BIGINT   NOT NULL,
    domain     TEXT COLLATE "C" NOT NULL,
    state      TEXT     NOT NULL,
    cell_id    TEXT COLLATE "C",
    generation BIGINT   NOT NULL,
    data       TEXT     NOT NULL,
    PRIMARY KEY (lrp, idx, presence)
);
CREATE INDEX instances_cell ON instances (cell_id);
CREATE INDEX instances_state ON instances (state);

CREATE TABLE tasks (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    domain     TEXT COLLATE "C" NOT NULL,
    state      TEXT   NOT NULL,
    cell_id    TEXT COLLATE "C",
    created_at BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    data       TEXT   NOT NULL
);
CREATE INDEX tasks_created ON tasks (created_at, id);
CREATE INDEX tasks_state ON tasks (state);
CREATE INDEX tasks_domain ON tasks (domain);
CREATE INDEX tasks_cell ON tasks (cell_id);

CREATE TABLE domains (
    name       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    expires_at BIGINT
);

CREATE TABLE locks (
    key        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    owner      TEXT   NOT NULL,
    kind       TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    fence      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX locks_expires ON locks (expires_at);

CREATE TABLE counters (
    name  TEXT   NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('event_seq', 0), ('fence', 0);

-- seq is assigned by the writer from counters.event_seq under a transaction-scoped
-- advisory lock, so it follows commit order even with several servers.
CREATE TABLE events (
    seq  BIGINT NOT NULL PRIMARY KEY,
    kind TEXT   NOT NULL,
    at   BIGINT NOT NULL,
    data TEXT   NOT NULL
);
