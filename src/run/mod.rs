//! Running a job: environment composition and bind parsing (pure), then the
//! sequence that sets up the container and execs the job.
