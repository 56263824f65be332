-- Times are unix microseconds, UTC. Lists, maps and structs are JSON text.
-- Ids and paths sort bytewise (COLLATE "C"), as in SQLite, so pages come in
-- the same order on both.

CREATE TABLE jobs (
    id              TEXT COLLATE "C" PRIMARY KEY,
    title           TEXT NOT NULL,
    brief           TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL,
    reason          TEXT NOT NULL DEFAULT '',
    budget_tokens   BIGINT NOT NULL DEFAULT 0,
    attachments     TEXT NOT NULL DEFAULT 'null',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX jobs_created_at ON jobs (created_at, id);
CREATE INDEX jobs_status_created_at ON jobs (status, created_at, id);

CREATE TABLE tasks (
    id           TEXT COLLATE "C" PRIMARY KEY,
    job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    role         TEXT NOT NULL,
    instructions TEXT NOT NULL DEFAULT '',
    depends_on   TEXT NOT NULL DEFAULT 'null',
    status       TEXT NOT NULL,
    revision     BIGINT NOT NULL DEFAULT 0,
    attempts     BIGINT NOT NULL DEFAULT 0,
    reason       TEXT NOT NULL DEFAULT '',
    feedback     TEXT NOT NULL DEFAULT '',
    ord          BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (job_id, key)
);
CREATE INDEX tasks_status_updated_at ON tasks (status, updated_at, id);
CREATE INDEX tasks_role_status ON tasks (role, status);

CREATE TABLE outputs (
    id                TEXT COLLATE "C" PRIMARY KEY,
    task_id           TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    job_id            TEXT NOT NULL,
    role              TEXT NOT NULL,
    revision          BIGINT NOT NULL,
    status            TEXT NOT NULL,
    content           TEXT NOT NULL DEFAULT '',
    files             TEXT NOT NULL DEFAULT 'null',
    model             TEXT NOT NULL DEFAULT '',
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    latency_ms        BIGINT NOT NULL DEFAULT 0,
    prompt            TEXT NOT NULL DEFAULT '',
    checks            TEXT NOT NULL DEFAULT 'null',
    created_at        BIGINT NOT NULL,
    UNIQUE (task_id, revision)
);
CREATE INDEX outputs_status_created_at ON outputs (status, created_at, id);
CREATE INDEX outputs_job_id ON outputs (job_id, created_at, id);

CREATE TABLE reviews (
    id         TEXT COLLATE "C" PRIMARY KEY,
    output_id  TEXT NOT NULL REFERENCES outputs (id) ON DELETE CASCADE,
    task_id    TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    decision   TEXT NOT NULL,
    reviewer   TEXT NOT NULL DEFAULT '',
    feedback   TEXT NOT NULL DEFAULT '',
    checks     TEXT NOT NULL DEFAULT 'null',
    lessons    TEXT NOT NULL DEFAULT 'null',
    created_at BIGINT NOT NULL
);
CREATE INDEX reviews_output_id ON reviews (output_id, created_at);
CREATE INDEX reviews_job_id ON reviews (job_id, created_at);

CREATE TABLE artifacts (
    id         TEXT COLLATE "C" PRIMARY KEY,
    path       TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL,
    job_id     TEXT NOT NULL DEFAULT '',
    task_id    TEXT NOT NULL DEFAULT '',
    output_id  TEXT NOT NULL DEFAULT '',
    role       TEXT NOT NULL DEFAULT '',
    content    TEXT NOT NULL DEFAULT '',
    size       BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    UNIQUE (path, version)
);
CREATE INDEX artifacts_task_id ON artifacts (task_id, path);
CREATE INDEX artifacts_job_id ON artifacts (job_id, path);

CREATE TABLE lessons (
    id         TEXT COLLATE "C" PRIMARY KEY,
    text       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    review_id  TEXT NOT NULL DEFAULT '',
    job_id     TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);
CREATE INDEX lessons_created_at ON lessons (created_at, id);
CREATE INDEX lessons_scope_created_at ON lessons (scope, created_at, id);

CREATE TABLE events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    job_id      TEXT NOT NULL,
    task_id     TEXT NOT NULL DEFAULT '',
    output_id   TEXT NOT NULL DEFAULT '',
    kind        TEXT NOT NULL,
    role        TEXT NOT NULL DEFAULT '',
    revision    BIGINT NOT NULL DEFAULT 0,
    message     TEXT NOT NULL DEFAULT '',
    occurred_at BIGINT NOT NULL,
    data        TEXT NOT NULL DEFAULT 'null'
);
CREATE INDEX events_job_id ON events (job_id, occurred_at, seq);

CREATE TABLE outbox (
    seq             BIGSERIAL PRIMARY KEY,
    subject         TEXT NOT NULL,
    msg_id          TEXT NOT NULL,
    payload         BYTEA NOT NULL,
    headers         TEXT NOT NULL DEFAULT 'null',
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    -- Failed publishes, the latest failure, and when to try again (0: at once).
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT '',
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    -- The relay that claimed the row, until when ('' and 0: unclaimed).
    claimed_by      TEXT NOT NULL DEFAULT '',
    claimed_until   BIGINT NOT NULL DEFAULT 0
);
-- Serves OutboxListUnsent and OutboxClaim: unsent rows in seq order, with
-- next_attempt_at at hand to skip rows not yet due without reading them.
CREATE INDEX outbox_unsent ON outbox (seq, next_attempt_at) WHERE sent_at IS NULL;

CREATE TABLE dead_letters (
    id          TEXT COLLATE "C" PRIMARY KEY,
    source      TEXT NOT NULL,
    subject     TEXT NOT NULL DEFAULT '',
    payload     TEXT NOT NULL DEFAULT '',
    headers     TEXT NOT NULL DEFAULT 'null',
    reason      TEXT NOT NULL DEFAULT '',
    class       TEXT NOT NULL DEFAULT '',
    attempts    BIGINT NOT NULL DEFAULT 0,
    stream_seq  BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    replay_of   TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL,
    task_id     TEXT NOT NULL DEFAULT '',
    job_id      TEXT NOT NULL DEFAULT '',
    stream      TEXT NOT NULL DEFAULT '',
    resolved_by TEXT NOT NULL DEFAULT '',
    resolved_at BIGINT NOT NULL DEFAULT 0 -- 0 while unresolved
);
CREATE INDEX dead_letters_created_at ON dead_letters (created_at, id);
CREATE INDEX dead_letters_status_created_at ON dead_letters (status, created_at, id);
CREATE INDEX dead_letters_source_created_at ON dead_letters (source, created_at, id);
CREATE INDEX dead_letters_job_id_created_at ON dead_letters (job_id, created_at, id);

-- One row per call to a model, failed ones too: for cost and audit. Roles
-- and models sort bytewise, as in SQLite, so totals come in the same order.
CREATE TABLE model_calls (
    id                TEXT COLLATE "C" PRIMARY KEY,
    job_id            TEXT NOT NULL,
    task_id           TEXT NOT NULL DEFAULT '',
    role              TEXT COLLATE "C" NOT NULL DEFAULT '',
    revision          BIGINT NOT NULL DEFAULT 0,
    model             TEXT COLLATE "C" NOT NULL DEFAULT '',
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    latency_ms        BIGINT NOT NULL DEFAULT 0,
    outcome           TEXT NOT NULL DEFAULT '',
    error             TEXT NOT NULL DEFAULT '',
    created_at        BIGINT NOT NULL
);
CREATE INDEX model_calls_job_id ON model_calls (job_id);
