-- Session 15 experiment (run.sh): the jobs table as it is, and beside it jobs2 with the
-- claimable state kept apart in job_due and report_due.
DROP TABLE IF EXISTS jobs, job_due, report_due, jobs2;
CREATE TABLE jobs (id bigserial PRIMARY KEY, message_id text NOT NULL UNIQUE, location_id text NOT NULL, type text NOT NULL,
 state text NOT NULL, attempts int NOT NULL DEFAULT 0, next_at bigint NOT NULL, created_at bigint NOT NULL, updated_at bigint NOT NULL,
 last_code int NOT NULL DEFAULT 0, last_error text, rfc_message_id text, report_status text, report_state text NOT NULL DEFAULT 'none',
 report_attempts int NOT NULL DEFAULT 0, report_next_at bigint NOT NULL DEFAULT 0, report_error text, rcpt_state text, uncertain int NOT NULL DEFAULT 0, owner text, email_message_id text);
CREATE INDEX jobs_due_id ON jobs(state, next_at, id);
CREATE INDEX jobs_report_pending ON jobs(report_next_at, id) WHERE report_state = 'pending';
CREATE TABLE jobs2 (LIKE jobs INCLUDING DEFAULTS) WITH (fillfactor = 70);
ALTER TABLE jobs2 ADD PRIMARY KEY (id); ALTER TABLE jobs2 ADD UNIQUE (message_id);
CREATE SEQUENCE jobs2_id; ALTER TABLE jobs2 ALTER id SET DEFAULT nextval('jobs2_id');
CREATE TABLE job_due (id bigint PRIMARY KEY, next_at bigint NOT NULL);
CREATE INDEX job_due_at ON job_due(next_at, id);
CREATE TABLE report_due (id bigint PRIMARY KEY, next_at bigint NOT NULL);
CREATE INDEX report_due_at ON report_due(next_at, id);
