-- flordb base tables. Idempotent: applied by flordb.store.schema on every open
-- for writing; the version applied is kept in schema_version.

CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER NOT NULL,
    applied     TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- One row per project: the name of the git repository's top-level directory.
CREATE TABLE IF NOT EXISTS projects (
    projid      VARCHAR PRIMARY KEY,
    repo_path   VARCHAR,
    created     TIMESTAMP
);

-- Code versions: commits of the working tree made under refs/flor/ without
-- touching the user's branch, index or working tree.
CREATE TABLE IF NOT EXISTS versions (
    projid      VARCHAR NOT NULL,
    vid         VARCHAR NOT NULL,      -- full 40-hex commit id
    tstamp      TIMESTAMP,             -- first run with this version
    branch      VARCHAR,               -- the user's branch at the time
    head        VARCHAR,               -- the user's HEAD commit (NULL in an empty repo)
    PRIMARY KEY (projid, vid)
);

CREATE TABLE IF NOT EXISTS runs (
    run_id      VARCHAR PRIMARY KEY,
    projid      VARCHAR NOT NULL,
    tstamp      TIMESTAMP NOT NULL,    -- start
    end_time    TIMESTAMP,
    status      VARCHAR NOT NULL,      -- running | finished | failed | killed
    vid         VARCHAR,
    filename    VARCHAR,               -- script path relative to the repository root
    host        VARCHAR,
    pid         INTEGER,
    argv        VARCHAR,               -- JSON array
    mode        VARCHAR,               -- record | handsfree
    error       VARCHAR,               -- the exception that ended a failed run
    ckpt_overhead DOUBLE,              -- achieved checkpoint overhead (fraction of compute)
    cwd         VARCHAR                -- working directory, relative to the repository root
);

-- Hyper-parameters (flor.arg): one row per run and name.
CREATE TABLE IF NOT EXISTS args (
    run_id      VARCHAR NOT NULL,
    name        VARCHAR NOT NULL,
    vtype       VARCHAR NOT NULL,      -- int | float | bool | str | json
    num         DOUBLE,
    txt         VARCHAR,
    PRIMARY KEY (run_id, name)
);

-- Log records (flor.log). Loop context: `path` names the enclosing flor.loop
-- levels outermost first ('epoch/step'), i1..i6 their 0-based iterations.
CREATE TABLE IF NOT EXISTS logs (
    run_id      VARCHAR NOT NULL,
    seq         BIGINT NOT NULL,       -- order within its segment
    source      VARCHAR NOT NULL,      -- record | replay | backfill
    name        VARCHAR NOT NULL,
    path        VARCHAR NOT NULL,      -- '' at run level
    i1 INTEGER, i2 INTEGER, i3 INTEGER, i4 INTEGER, i5 INTEGER, i6 INTEGER,
    vtype       VARCHAR NOT NULL,      -- int | float | bool | str | json
    num         DOUBLE,
    txt         VARCHAR,
    flag        VARCHAR                -- NULL, 'approximate' or 'mismatch'
);

-- The project relation's catalog: which names each project logs, at which loop
-- path, with which value types. Kept at ingest, so that building a query's view
-- never scans `logs`.
CREATE TABLE IF NOT EXISTS log_names (
    projid      VARCHAR NOT NULL,
    name        VARCHAR NOT NULL,
    path        VARCHAR NOT NULL,
    vtype       VARCHAR NOT NULL,
    PRIMARY KEY (projid, name, path, vtype)
);

-- Segments already ingested: re-ingesting one is a no-op, so records never duplicate.
CREATE TABLE IF NOT EXISTS segments (
    segment     VARCHAR PRIMARY KEY,
    run_id      VARCHAR NOT NULL,
    records     BIGINT,
    ingested    TIMESTAMP
);

-- Outer-loop iterations: compute time and whether a checkpoint was taken.
CREATE TABLE IF NOT EXISTS iterations (
    run_id      VARCHAR NOT NULL,
    loop_name   VARCHAR NOT NULL,
    iteration   INTEGER NOT NULL,
    seconds     DOUBLE,
    checkpointed BOOLEAN,
    PRIMARY KEY (run_id, iteration)
);

-- Checkpoint manifests: one row per run, iteration and registered object.
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id      VARCHAR NOT NULL,
    iteration   INTEGER NOT NULL,      -- state at the END of this outer iteration
    object      VARCHAR NOT NULL,
    codec       VARCHAR NOT NULL,      -- none | lossless | lc
    kind        VARCHAR,               -- key | delta
    base_iteration INTEGER,            -- keyframe this delta chains from
    digest      VARCHAR,               -- blob under FLORDB_HOME/blobs; NULL when the write failed
    raw_bytes   BIGINT,
    stored_bytes BIGINT,
    approximate BOOLEAN,
    status      VARCHAR NOT NULL,      -- ok | failed
    error       VARCHAR,
    PRIMARY KEY (run_id, iteration, object)
);

-- Columns added after the first release: ALTERs keep older databases current.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS cwd VARCHAR;
