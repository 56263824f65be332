-- Indexes for the dashboard's read queries.

-- JobsFinished: finished jobs by status, in a window of updated_at.
CREATE INDEX jobs_status_updated_at ON jobs (status, updated_at);

-- JobList by role: "has the job a task of this role" is one index-only
-- probe per job, without reading the task. job_id is indexed in "C":
-- tasks.job_id = jobs.id compares in jobs.id's collation, and an index in
-- another collation would never serve that probe.
CREATE INDEX tasks_job_id_role ON tasks (job_id COLLATE "C", role);

-- OutputCount by role and RoleStats: covering, so counting and averaging a
-- role's outputs reads the index, not the rows with their content.
CREATE INDEX outputs_role_status ON outputs (role, status, revision, latency_ms);

-- ModelCallListByJob: a job's calls in order. It serves every lookup by
-- job_id, so the index on job_id alone goes.
CREATE INDEX model_calls_job_id_created_at ON model_calls (job_id, created_at, id);
DROP INDEX model_calls_job_id;
