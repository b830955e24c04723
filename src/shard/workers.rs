//! The journals of several workers of one sharded job, read as one job.
