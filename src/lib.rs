//! redis-ferry copies every key of a live Redis (standalone or cluster) into
//! another Redis, records every SCAN cursor and every key's outcome in a
//! SQLite journal, and can resume, retry and prove afterwards what happened.
//!
//! # Layout
//!
//! The command line (thin):
//! - [`cli`]: clap definitions and the entry point; [`commands`]: one file
//!   per subcommand, turning flags into plain settings.
//! - [`exit`]: the contract's exit codes; [`hint`]: the next commands
//!   suggested, written to work as printed.
//!
//! A job, from the outside in:
//! - [`job`]: run / resume / retry: what to copy, the checks before writing,
//!   how a job ends; [`or_resume`]: whether a journal holds the job a
//!   `run --or-resume` command line describes.
//! - [`pipeline`]: listers → copy workers → journal, overlapping.
//! - [`scan`]: SCAN cursors walked as checkpointable batches of keys.
//! - [`copy`]: one batch copied under the fence (WATCH before the read),
//!   DUMP + PTTL, RESTORE / DEL, per-key outcomes; [`route`]: each key to
//!   the node serving it, following MOVED / ASK.
//! - [`follow`]: `--follow`: the source's changes copied until cutover.
//! - [`keyspace`]: a thread subscribed to one node's keyspace notifications
//!   (what `follow` and the fence's change feed listen to).
//! - [`journal`]: the SQLite journal (schema in `migrations/`): outcomes,
//!   counts and cursors move forward together, whole batches at a time.
//! - [`preflight`]: the checks that refuse a job before anything is written.
//! - [`status`], [`dry_run`]: read-only views; [`output`]: stdout, where a
//!   closed pipe ends output quietly.
//! - [`report`]: key counts now beside the journal's outcomes, a verdict,
//!   and the per-key CSV audit log.
//! - [`verify`]: source and target compared key by key (DUMP first, then
//!   by type, big values in chunks); differences become `mismatch`.
//! - [`shard`]: `--shard I/N`, one worker's share of a cluster's hash
//!   slots, and the journals of several workers read as one job.
//!
//! Talking to Redis:
//! - [`endpoint`]: URLs, passwords (never shown), TLS.
//! - [`connection`]: one node, pipelines, reconnects, error classes;
//!   [`wire`]: commands encoded straight into the pipeline's buffer.
//! - [`side`]: a source or target deployment (standalone or cluster).
//! - [`cluster`]: topology and hash slots; [`coverage`]: proving a cluster
//!   source was covered while its slots move. [`server`]: INFO facts.
//!
//! Any server version, any key size:
//! - [`capabilities`]: what each server can load and do; the up-front
//!   RESTORE-or-commands decision and the per-key fallback.
//! - [`rebuild`]: keys read and written with ordinary commands of their
//!   type (another version or fork), and big keys copied in chunks.
//!
//! Small pieces: [`options`], [`outcome`], [`escape`] (binary keys as
//! text), [`progress`], [`log`] (every line on stderr), [`metrics`]
//! (Prometheus, `--metrics-addr`), [`rate`],
//! [`interrupt`] (Ctrl-C), [`clock`].

pub mod capabilities;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod connection;
pub mod copy;
pub mod coverage;
pub mod dry_run;
pub mod endpoint;
pub mod escape;
pub mod exit;
pub mod follow;
pub mod hint;
pub mod interrupt;
pub mod job;
pub mod journal;
pub mod keyspace;
pub mod log;
pub mod metrics;
pub mod options;
pub mod or_resume;
pub mod outcome;
pub mod output;
pub mod pipeline;
pub mod preflight;
pub mod progress;
pub mod rate;
pub mod rebuild;
pub mod report;
pub mod route;
pub mod scan;
pub mod server;
pub mod shard;
pub mod side;
pub mod status;
pub mod verify;
pub mod wire;
