-- The sample job (queue souk.record_sample.v1) records here what it did, so the demo and the
-- queue's crash and cron tests can count runs and completions in PostgreSQL.

-- One row each time a handler started (a job killed mid-run and finished elsewhere has two).
CREATE TABLE sample_starts (
    id          bigserial PRIMARY KEY,
    job_id      text        NOT NULL,
    label       text        NOT NULL,
    attempt     integer     NOT NULL,
    consumer    text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sample_starts_job_id ON sample_starts (job_id);

-- One row per job that completed: the job id is the key, so a second completion of the same
-- job (a redelivery after a crash) changes nothing.
CREATE TABLE sample_completions (
    job_id        text PRIMARY KEY,
    label         text        NOT NULL,
    attempts      integer     NOT NULL,
    enqueued_at   timestamptz NOT NULL,
    completed_at  timestamptz NOT NULL DEFAULT now()
);
