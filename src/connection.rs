//! One connection to one Redis node, and what to do when it breaks.
//!
//! [`NodeConnection`] sends pipelines and hands back one reply per command,
//! with server errors left in place (`Value::ServerError`) so the caller can
//! decide per key. When the connection itself fails (dropped, refused, timed
//! out) it reconnects with exponential backoff and sends the pipeline again,
//! up to a time budget, saying so in the log. Past the budget the error
//! stops the job, which stays resumable.
//!
//! Resending is safe for reads, `RESTORE ... REPLACE` and `DEL`, but not for
//! a fenced write: a `WATCH` lives on the connection that sent it, so after
//! a reconnect the `EXEC` it guarded would run unguarded. Every new
//! connection gets a new *generation* number; [`NodeConnection::send_fenced`]
//! sends only on the generation the fence was set up on, and never resends.
//!
//! A reconnect also checks who answers: a server whose `run_id` changed
//! restarted (and may have lost what it held), which is logged at once
//! (the job compares identities after each pass and acts there); a server
//! still loading its dataset (`LOADING`) is waited for within the same
//! budget.
//!
//! [`classify`] sorts a server error into the decision it calls for.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use redis::{ConnectionLike, ServerError, ServerErrorKind, Value};

use crate::endpoint::{
    CONNECT_TIMEOUT, Endpoint, describe_connect_error, describe_first_connect_error,
};
use crate::interrupt::Shutdown;
use crate::log;
use crate::wire::CommandBuffer;

/// How long one reply may take before the connection counts as broken.
/// Generous, because a DUMP or RESTORE of a very large key takes seconds.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The wait between reconnect attempts: 100 ms, doubling up to 5 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// Sleeps for the current wait, and doubles the next one.
    pub fn wait(&mut self) {
        std::thread::sleep(self.next);
        self.next = (self.next * 2).min(MAX_BACKOFF);
    }

    /// After a success: the next failure waits the first wait again.
    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }
}
/// How often a server that answers `LOADING` is asked again.
const LOADING_POLL: Duration = Duration::from_millis(200);

/// What the log already said about each server's link: a job holds many
/// connections to one server (a pool of workers), and when the server goes
/// away they all notice; the operator needs one line per outage, not one
/// per connection.
#[derive(Default)]
struct LinkLog {
    /// Servers (by role and address) whose loss was logged, since when.
    lost: HashMap<String, Instant>,
    /// Restarts already told, as (server, new run_id).
    restarts: HashSet<(String, String)>,
    /// Servers said to be loading their dataset.
    loading: HashSet<String>,
    /// When each server's link last came back: the job's other connections
    /// find out they were cut by the same outage a little later, one by
    /// one, as they are next used.
    recovered: HashMap<String, Instant>,
}

/// A loss noticed this soon after the link came back is the same outage.
const SAME_OUTAGE: Duration = Duration::from_secs(30);

static LINK_LOG: LazyLock<Mutex<LinkLog>> = LazyLock::new(Default::default);

fn link_log() -> std::sync::MutexGuard<'static, LinkLog> {
    LINK_LOG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection to one node that reconnects on failure.
pub struct NodeConnection {
    endpoint: Endpoint,
    client: redis::Client,
    connection: Option<redis::Connection>,
    /// Bumped on every (re)connect: a fence set up on one generation does
    /// not hold on the next.
    generation: u64,
    /// The database the open connection has selected.
    selected_db: i64,
    /// The database the next command should run in.
    wanted_db: i64,
    /// The server's run_id when this connection was opened.
    run_id: String,
    reconnect_budget: Duration,
    shutdown: Shutdown,
}

impl NodeConnection {
    /// Connects now, so an unreachable server or a wrong password is reported
    /// before any work starts (no retry: the operator should see it at once).
    /// A server still loading its dataset is waited for.
    pub fn open(
        endpoint: &Endpoint,
        reconnect_budget: Duration,
        shutdown: Shutdown,
    ) -> Result<Self> {
        Self::open_waiting(endpoint, reconnect_budget, shutdown, Duration::ZERO)
    }

    /// Connects a connection first needed while a job runs (another
    /// thread's, another node's): a server down for a moment is waited for
    /// within the reconnect budget, as a dropped connection is, instead of
    /// stopping the job at once.
    pub fn open_during_job(
        endpoint: &Endpoint,
        reconnect_budget: Duration,
        shutdown: Shutdown,
    ) -> Result<Self> {
        Self::open_waiting(endpoint, reconnect_budget, shutdown, reconnect_budget)
    }

    fn open_waiting(
        endpoint: &Endpoint,
        reconnect_budget: Duration,
        shutdown: Shutdown,
        wait: Duration,
    ) -> Result<Self> {
        let client = endpoint.client(0)?;
        let started = Instant::now();
        let mut backoff = Backoff::default();
        let connection = loop {
            match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
                Ok(connection) => break connection,
                Err(error)
                    if is_connection_error(&error)
                        && started.elapsed() < wait
                        && !shutdown.requested() =>
                {
                    backoff.wait();
                }
                Err(error) => {
                    let within = if wait.is_zero() {
                        String::new()
                    } else {
                        format!(" within {}s", wait.as_secs())
                    };
                    return Err(anyhow!(describe_first_connect_error(&error, endpoint)))
                        .with_context(|| {
                            format!(
                                "cannot connect to {} {}{within}",
                                endpoint.role,
                                endpoint.redacted()
                            )
                        });
                }
            }
        };
        set_timeouts(&connection);
        let mut connection = connection;
        check_authenticated(&mut connection, endpoint)?;
        let mut node = NodeConnection {
            endpoint: endpoint.clone(),
            client,
            connection: Some(connection),
            generation: 1,
            selected_db: 0,
            wanted_db: 0,
            run_id: String::new(),
            reconnect_budget,
            shutdown,
        };
        node.wait_while_loading(Instant::now())?;
        node.run_id = node.read_run_id().unwrap_or_default();
        Ok(node)
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `host:port` of this node, for messages and cluster bookkeeping.
    pub fn address(&self) -> String {
        self.endpoint.address.to_string()
    }

    /// The server's run_id as this connection last saw it.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The generation of the connection the next command goes out on (see
    /// the module doc). Reconnecting changes it.
    pub fn generation(&self) -> u64 {
        if self.connection.is_some() {
            self.generation
        } else {
            self.generation + 1
        }
    }

    /// Makes later commands run in `db` (sent lazily with the next pipeline).
    pub fn select(&mut self, db: i64) {
        self.wanted_db = db;
    }

    /// Runs one command; a server error is returned as an `Err`.
    pub fn command(&mut self, command: &redis::Cmd) -> Result<Value> {
        let mut pipe = CommandBuffer::new();
        pipe.add_command(command.clone());
        let reply = self.pipeline(&pipe)?.pop().unwrap_or(Value::Nil);
        match reply {
            Value::ServerError(error) => Err(anyhow!(error_text(&error))),
            other => Ok(other),
        }
    }

    /// Sends a pipeline and returns one reply per command. Connection
    /// failures are retried within the reconnect budget.
    pub fn pipeline(&mut self, pipe: &CommandBuffer) -> Result<Vec<Value>> {
        if pipe.is_empty() {
            return Ok(Vec::new());
        }
        self.send_with_retry(pipe.bytes(), pipe.len())
    }

    /// Sends a pipeline once, on connection `generation` only: the
    /// `EXEC` of a fence set up on that connection. Returns `None`, without
    /// sending, when that connection is gone, and `None` when it breaks
    /// while sending (the caller cannot know whether the server ran it).
    pub fn send_fenced(
        &mut self,
        pipe: &CommandBuffer,
        generation: u64,
    ) -> Result<Option<Vec<Value>>> {
        if self.connection.is_none() || self.generation != generation {
            return Ok(None);
        }
        match self.try_send(pipe.bytes(), pipe.len()) {
            Ok(replies) => Ok(Some(replies)),
            Err(error) if is_connection_error(&error) => {
                self.log_lost(&format!(
                    "{}, during a fenced write: that batch is copied again",
                    describe_connect_error(&error)
                ));
                self.connection = None;
                Ok(None)
            }
            Err(error) => Err(anyhow!(describe_connect_error(&error))).with_context(|| {
                format!("{} {} failed", self.endpoint.role, self.endpoint.redacted())
            }),
        }
    }

    /// Sends already packed commands (`count` of them) with retry.
    pub fn send_with_retry(&mut self, packed: &[u8], count: usize) -> Result<Vec<Value>> {
        let started = Instant::now();
        let mut backoff = Backoff::default();
        let mut lost = false;
        loop {
            let error = match self.try_send(packed, count) {
                Ok(replies) => return Ok(replies),
                Err(error) => error,
            };
            let loading = is_loading(&error);
            if !is_connection_error(&error) && !loading {
                return Err(anyhow!(describe_connect_error(&error))).with_context(|| {
                    format!("{} {} failed", self.endpoint.role, self.endpoint.redacted())
                });
            }
            self.connection = None;
            if loading {
                self.log_loading();
            } else if !lost {
                lost = true;
                self.log_lost(&describe_connect_error(&error));
            }
            if started.elapsed() >= self.reconnect_budget || self.shutdown.requested() {
                return Err(anyhow!(describe_connect_error(&error))).with_context(|| {
                    format!(
                        "lost the connection to {} {} and could not get it back within {}s",
                        self.endpoint.role,
                        self.endpoint.redacted(),
                        self.reconnect_budget.as_secs()
                    )
                });
            }
            backoff.wait();
        }
    }

    /// The server's name in the link log.
    fn link_name(&self) -> String {
        format!("{} {}", self.endpoint.role, self.endpoint.redacted())
    }

    /// Logs a lost link, unless another connection to the server already did.
    fn log_lost(&self, reason: &str) {
        let name = self.link_name();
        let mut log_state = link_log();
        let same_outage = log_state
            .recovered
            .get(&name)
            .is_some_and(|at| at.elapsed() < SAME_OUTAGE);
        if log_state.lost.contains_key(&name) || same_outage {
            return;
        }
        log_state.lost.insert(name.clone(), Instant::now());
        drop(log_state);
        log::warn(format!(
            "lost the connection to {name} ({reason}); reconnecting for up to {}s",
            self.reconnect_budget.as_secs()
        ));
    }

    /// Logs that the server is loading its dataset, once per outage.
    fn log_loading(&self) {
        let name = self.link_name();
        if link_log().loading.insert(name.clone()) {
            log::warn(format!(
                "{name} is loading its dataset; waiting for up to {}s",
                self.reconnect_budget.as_secs()
            ));
        }
    }

    /// Logs that the link is back, once per outage.
    fn log_back(&self) {
        let name = self.link_name();
        let since = {
            let mut log_state = link_log();
            if log_state.loading.remove(&name) {
                log::info(format!("{name} has loaded its dataset"));
            }
            let since = log_state.lost.remove(&name);
            if since.is_some() {
                log_state.recovered.insert(name.clone(), Instant::now());
            }
            since
        };
        if let Some(since) = since {
            log::info(format!(
                "reconnected to {name} after {:.1}s",
                since.elapsed().as_secs_f64()
            ));
        }
    }

    fn try_send(&mut self, packed: &[u8], count: usize) -> redis::RedisResult<Vec<Value>> {
        if self.connection.is_none() {
            self.reconnect()?;
        }
        let connection = self.connection.as_mut().expect("connected above");
        if self.selected_db != self.wanted_db {
            let reply = connection.req_command(redis::cmd("SELECT").arg(self.wanted_db))?;
            if let Value::ServerError(error) = reply {
                return Err(error.into());
            }
            self.selected_db = self.wanted_db;
        }
        connection.req_packed_commands(packed, 0, count)
    }

    /// Opens a new connection: waits while the server loads its dataset,
    /// and notices when another server process answers (a restart).
    fn reconnect(&mut self) -> redis::RedisResult<()> {
        let connection = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        set_timeouts(&connection);
        self.connection = Some(connection);
        self.generation += 1;
        self.selected_db = 0;
        if self.wait_while_loading(Instant::now()).is_err() {
            self.connection = None;
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the server kept loading its dataset",
            )));
        }
        let run_id = self.read_run_id()?;
        if !self.run_id.is_empty() && run_id != self.run_id {
            let name = self.link_name();
            if link_log().restarts.insert((name.clone(), run_id.clone())) {
                log::warn(format!(
                    "{name} restarted (its run_id changed): what it held before may be gone; the job checks when this pass ends"
                ));
            }
        }
        self.run_id = run_id;
        self.log_back();
        Ok(())
    }

    /// `run_id` from INFO server.
    fn read_run_id(&mut self) -> redis::RedisResult<String> {
        let connection = self.connection.as_mut().expect("connected");
        let reply = connection.req_command(redis::cmd("INFO").arg("server"))?;
        let text = match reply {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::VerbatimString { text, .. } => text,
            _ => String::new(),
        };
        Ok(text
            .lines()
            .find_map(|line| line.trim_end().strip_prefix("run_id:"))
            .unwrap_or_default()
            .to_string())
    }

    /// A server restarted with persistence answers `LOADING` until its
    /// dataset is in memory: wait for it within the reconnect budget.
    fn wait_while_loading(&mut self, started: Instant) -> Result<()> {
        loop {
            let connection = self.connection.as_mut().expect("connected");
            let loading = match connection.req_command(&redis::cmd("PING")) {
                Ok(Value::ServerError(error)) => error.kind() == Some(ServerErrorKind::BusyLoading),
                Err(error) => is_loading(&error),
                Ok(_) => false,
            };
            if !loading {
                return Ok(());
            }
            self.log_loading();
            if started.elapsed() >= self.reconnect_budget || self.shutdown.requested() {
                bail!(
                    "{} {} was still loading its dataset after {}s",
                    self.endpoint.role,
                    self.endpoint.redacted(),
                    self.reconnect_budget.as_secs()
                );
            }
            std::thread::sleep(LOADING_POLL);
        }
    }
}

/// A server with a password accepts the connection and refuses the first
/// command; say so at connect time, in the operator's terms.
fn check_authenticated(connection: &mut redis::Connection, endpoint: &Endpoint) -> Result<()> {
    let refused = match connection.req_command(&redis::cmd("PING")) {
        Ok(Value::ServerError(error)) => error.code() == "NOAUTH",
        Err(error) => error.to_string().contains("NOAUTH"),
        Ok(_) => false,
    };
    if refused {
        bail!(
            "cannot connect to {} {}: authentication required: put the password in the URL or in {}",
            endpoint.role,
            endpoint.redacted(),
            endpoint.role.password_variable()
        );
    }
    Ok(())
}

fn set_timeouts(connection: &redis::Connection) {
    connection.set_read_timeout(Some(REPLY_TIMEOUT)).ok();
    connection.set_write_timeout(Some(REPLY_TIMEOUT)).ok();
}

/// The server answered `LOADING`: it is reading its dataset from disk.
fn is_loading(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(ServerErrorKind::BusyLoading)
        || error.code() == Some("LOADING")
}

/// A connection-level failure worth reconnecting for (as opposed to a
/// reply the server gave on purpose).
fn is_connection_error(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
}

/// A server error as Redis prints it: `NOPERM No permissions to access a key`.
pub fn error_text(error: &ServerError) -> String {
    match error.details() {
        Some(details) => format!("{} {}", error.code(), details),
        None => error.code().to_string(),
    }
}

/// What a server error in a reply calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// The key lives on another cluster node (`MOVED`), for good.
    Moved { slot: u16, address: String },
    /// The key is being migrated; ask the other node this once (`ASK`).
    Ask { slot: u16, address: String },
    /// `RESTORE` without `REPLACE` found the key already on the target.
    BusyKey,
    /// Wait and send again: the server is loading, or the cluster is
    /// reconfiguring.
    Transient(String),
    /// Nothing about this key can fix it: out of memory, read-only replica,
    /// authentication, a missing command permission. Stop the job.
    Fatal(String),
    /// This key failed (ACL key pattern, bad payload, missing module...);
    /// record it and go on.
    Key(String),
}

/// Sorts a server error by the decision it calls for.
pub fn classify(error: &ServerError) -> ErrorClass {
    let text = error_text(error);
    let details = error.details().unwrap_or("");
    match error.kind() {
        Some(ServerErrorKind::Moved) | Some(ServerErrorKind::Ask) => {
            match parse_redirect(details) {
                Some((slot, address)) if error.kind() == Some(ServerErrorKind::Moved) => {
                    ErrorClass::Moved { slot, address }
                }
                Some((slot, address)) => ErrorClass::Ask { slot, address },
                None => ErrorClass::Key(text),
            }
        }
        Some(ServerErrorKind::TryAgain)
        | Some(ServerErrorKind::ClusterDown)
        | Some(ServerErrorKind::BusyLoading)
        | Some(ServerErrorKind::MasterDown) => ErrorClass::Transient(text),
        Some(ServerErrorKind::ReadOnly) => ErrorClass::Fatal(text),
        Some(ServerErrorKind::NoPerm) => {
            // "has no permissions to run the 'restore' command" stops every
            // key alike; "No permissions to access a key" is about this key.
            if details.contains("to run the") {
                ErrorClass::Fatal(text)
            } else {
                ErrorClass::Key(text)
            }
        }
        _ => match error.code() {
            "BUSYKEY" => ErrorClass::BusyKey,
            "OOM" | "NOAUTH" | "WRONGPASS" | "MISCONF" | "NOREPLICAS" => ErrorClass::Fatal(text),
            "BUSY" => ErrorClass::Transient(text),
            "ERR" if details.starts_with("unknown command") => ErrorClass::Fatal(text),
            _ => ErrorClass::Key(text),
        },
    }
}

/// `"3999 127.0.0.1:6381"` → `(3999, "127.0.0.1:6381")`.
fn parse_redirect(details: &str) -> Option<(u16, String)> {
    let mut parts = details.split_whitespace();
    let slot = parts.next()?.parse().ok()?;
    let address = parts.next()?.to_string();
    Some((slot, address))
}

/// Reads a bulk or simple string reply as text.
pub fn expect_text(value: Value, what: &str) -> Result<String> {
    match value {
        Value::BulkString(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => Ok(text),
        Value::Okay => Ok("OK".to_string()),
        Value::ServerError(error) => bail!("{what} failed: {}", error_text(&error)),
        other => bail!("{what} returned {other:?} where text was expected"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(text: &str) -> ServerError {
        let value = redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).unwrap();
        match value {
            Value::ServerError(error) => error,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn redirects_name_slot_and_node() {
        assert_eq!(
            classify(&server_error("MOVED 3999 127.0.0.1:6381")),
            ErrorClass::Moved {
                slot: 3999,
                address: "127.0.0.1:6381".into()
            }
        );
        assert_eq!(
            classify(&server_error("ASK 12 10.0.0.2:7000")),
            ErrorClass::Ask {
                slot: 12,
                address: "10.0.0.2:7000".into()
            }
        );
    }

    #[test]
    fn job_level_and_key_level_errors_are_told_apart() {
        let fatal = [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "READONLY You can't write against a read only replica.",
            "NOAUTH Authentication required.",
            "NOPERM User bob has no permissions to run the 'restore' command",
            "MISCONF Redis is configured to save RDB snapshots",
        ];
        for text in fatal {
            assert!(
                matches!(classify(&server_error(text)), ErrorClass::Fatal(_)),
                "{text}"
            );
        }
        let per_key = [
            "NOPERM No permissions to access a key",
            "ERR Bad data format",
            "ERR DUMP payload version or checksum are wrong",
        ];
        for text in per_key {
            assert!(
                matches!(classify(&server_error(text)), ErrorClass::Key(_)),
                "{text}"
            );
        }
        assert_eq!(
            classify(&server_error("BUSYKEY Target key name already exists.")),
            ErrorClass::BusyKey
        );
        assert!(matches!(
            classify(&server_error(
                "LOADING Redis is loading the dataset in memory"
            )),
            ErrorClass::Transient(_)
        ));
    }

    #[test]
    fn error_text_reads_like_redis() {
        assert_eq!(
            error_text(&server_error("NOPERM No permissions to access a key")),
            "NOPERM No permissions to access a key"
        );
    }
}
