//! Throwaway redis-server processes: standalone servers and 3-primary
//! clusters, on free loopback ports, in temporary directories, killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to come up on a busy machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_string())
}

pub fn redis_cli_bin() -> String {
    std::env::var("REDIS_CLI_BIN").unwrap_or_else(|_| "redis-cli".to_string())
}

/// Ports are handed out from a range per test process, starting at a
/// pid-derived offset, and checked free (with their cluster bus port,
/// port + 10000) before use. 6379 is never used.
fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = (std::process::id() % 500) * 40;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (21000 + (base + offset) % 20000) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10000) {
            return port;
        }
    }
}

/// Which server executable to run, and the flags it understands.
#[derive(Debug, Clone)]
pub struct ServerProgram {
    pub binary: String,
    /// `--enable-debug-command` exists from Redis 7 on; older servers refuse
    /// to start when given it.
    pub debug_command_flag: bool,
}

impl ServerProgram {
    /// The default `redis-server` (Debian's 7.0, or `REDIS_SERVER_BIN`).
    pub fn default_redis() -> ServerProgram {
        ServerProgram {
            binary: redis_server_bin(),
            debug_command_flag: true,
        }
    }
}

/// One redis-server process.
pub struct RedisServer {
    pub port: u16,
    program: ServerProgram,
    /// Extra config directives, kept for `restart`.
    extra: Vec<String>,
    /// The `--requirepass` the server was started with, if any.
    pub password: Option<String>,
    process: Child,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A standalone server with default settings.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A standalone server with extra config directives, e.g.
    /// `&["--hash-max-listpack-entries", "0"]`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_program(&ServerProgram::default_redis(), extra)
    }

    /// A standalone server run by `program` (another version or fork).
    pub fn start_program(program: &ServerProgram, extra: &[&str]) -> RedisServer {
        for _ in 0..5 {
            if let Some(server) = RedisServer::try_start(program, extra) {
                return server;
            }
        }
        panic!("could not start {} after 5 attempts", program.binary);
    }

    fn try_start(program: &ServerProgram, extra: &[&str]) -> Option<RedisServer> {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let process = spawn_server(program, port, &dir, extra);
        let password = extra
            .windows(2)
            .find(|pair| pair[0] == "--requirepass")
            .map(|pair| pair[1].to_string());
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut server = RedisServer {
            port,
            program: program.clone(),
            extra,
            password,
            process,
            dir,
        };
        if server.wait_ready() {
            Some(server)
        } else {
            None // port taken between the check and the start, most likely
        }
    }

    /// Starts the server again on the same port and directory (with
    /// `--appendonly yes` among its settings, its data survives).
    pub fn restart(&mut self) {
        self.stop();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.process = spawn_server(&self.program, self.port, &self.dir, &extra);
        assert!(
            self.wait_ready(),
            "redis-server did not come back on port {}\n{}",
            self.port,
            self.log()
        );
    }

    /// Starts the server again without waiting for it to answer (a server
    /// with data to load answers LOADING for a while).
    pub fn restart_without_waiting(&mut self) {
        self.stop();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.process = spawn_server(&self.program, self.port, &self.dir, &extra);
    }

    fn wait_ready(&mut self) -> bool {
        let started = Instant::now();
        while started.elapsed() < STARTUP_TIMEOUT {
            if let Ok(Some(_)) = self.process.try_wait() {
                return false;
            }
            if let Ok(client) = redis::Client::open(self.admin_url(0))
                && let Ok(mut connection) =
                    client.get_connection_with_timeout(Duration::from_secs(2))
                && redis::cmd("PING").query::<String>(&mut connection).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} not ready after {STARTUP_TIMEOUT:?}\n{}",
            self.port,
            self.log()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn url_db(&self, db: i64) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The URL with the server's password, for the tests' own connections.
    pub fn admin_url(&self, db: i64) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/{db}", self.port),
            None => format!("redis://127.0.0.1:{}/{db}", self.port),
        }
    }

    /// A connection selecting `db` (authenticated when the server has a password).
    pub fn connection_db(&self, db: i64) -> redis::Connection {
        let client = redis::Client::open(self.admin_url(db)).expect("client");
        client
            .get_connection_with_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("cannot connect to test server {}: {e}", self.port))
    }

    pub fn connection(&self) -> redis::Connection {
        self.connection_db(0)
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Stops the server now (to test an unreachable target).
    pub fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Adds ACL user `ferry` (with `password`) that may only touch keys
    /// matching `ok:*`: writing any other key fails with NOPERM.
    pub fn restrict_ferry_user_to_ok_keys(&self, password: &str) {
        redis::cmd("ACL")
            .arg(&[
                "SETUSER",
                "ferry",
                "on",
                &format!(">{password}"),
                "~ok:*",
                "+@all",
            ])
            .exec(&mut self.connection())
            .expect("ACL SETUSER");
    }

    /// (Re)defines ACL user `ferry` (with `password`) that may only touch
    /// keys matching `patterns` (e.g. `["~bulk:*"]`, or `["~*"]` for all).
    pub fn restrict_ferry_user_to(&self, patterns: &[&str], password: &str) {
        let mut command = redis::cmd("ACL");
        command
            .arg("SETUSER")
            .arg("ferry")
            .arg("reset")
            .arg("on")
            .arg(format!(">{password}"));
        for pattern in patterns {
            command.arg(*pattern);
        }
        command
            .arg("+@all")
            .exec(&mut self.connection())
            .expect("ACL SETUSER");
    }

    /// The URL of this server as ACL user `ferry`.
    pub fn ferry_user_url(&self, password: &str) -> String {
        format!("redis://ferry:{password}@127.0.0.1:{}", self.port)
    }

    /// Closes every pub/sub client of this server (`CLIENT KILL TYPE
    /// pubsub`), as an output buffer limit or a proxy restart would;
    /// returns how many there were.
    pub fn kill_pubsub_clients(&self) -> i64 {
        redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "pubsub"])
            .query(&mut self.connection())
            .expect("CLIENT KILL TYPE pubsub")
    }

    /// Runs redis-cli against this server.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(redis_cli_bin())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs")
    }
}

fn spawn_server(
    program: &ServerProgram,
    port: u16,
    dir: &tempfile::TempDir,
    extra: &[&str],
) -> Child {
    let log = dir.path().join("redis.log");
    let debug_flag: &[&str] = if program.debug_command_flag {
        &["--enable-debug-command", "yes"]
    } else {
        &[]
    };
    Command::new(&program.binary)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--logfile")
        .arg(&log)
        .args(["--protected-mode", "no"])
        .args(debug_flag)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; install redis-server (other versions: .ci/fetch-servers)",
                program.binary
            )
        })
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A cluster of 3 primaries (and `replicas` replicas per primary), with
/// every slot assigned and `cluster_state:ok` on every node.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        RedisCluster::start_with_replicas(0)
    }

    pub fn start_with_replicas(replicas: usize) -> RedisCluster {
        let count = 3 * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut command = Command::new(redis_cli_bin());
        command.arg("--cluster").arg("create").args(&addresses);
        command.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let output = command.output().expect("redis-cli --cluster create runs");
        assert!(
            output.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok` and agrees on the
    /// slots (and replicas have finished their first sync).
    pub fn wait_ok(&self) {
        let started = Instant::now();
        loop {
            let ready = self.nodes.iter().all(|node| {
                let mut connection = node.connection();
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut connection)
                    .unwrap_or_default();
                let replication: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut connection)
                    .unwrap_or_default();
                let slots_ok =
                    info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384");
                let synced = !replication.contains("role:slave")
                    || replication.contains("master_link_status:up");
                slots_ok && synced
            });
            if ready && self.every_node_sees_all_nodes() {
                return;
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!("cluster not ready after 60s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn every_node_sees_all_nodes(&self) -> bool {
        self.nodes.iter().all(|node| {
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut node.connection())
                .unwrap_or_default();
            nodes.lines().filter(|l| !l.contains("handshake")).count() == self.nodes.len()
        })
    }

    /// A URL naming one node (any node will do for redis-ferry).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// A cluster client for filling and reading data in tests.
    pub fn client(&self) -> redis::cluster::ClusterClient {
        redis::cluster::ClusterClient::new(self.nodes.iter().map(|n| n.url()).collect::<Vec<_>>())
            .expect("cluster client")
    }

    pub fn connection(&self) -> redis::cluster::ClusterConnection {
        self.client().get_connection().expect("cluster connection")
    }

    /// The primaries, by port.
    pub fn primaries(&self) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .filter(|node| {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut node.connection())
                    .unwrap_or_default();
                info.contains("role:master")
            })
            .collect()
    }

    /// Total keys over every primary.
    pub fn dbsize(&self) -> u64 {
        self.primaries()
            .iter()
            .map(|node| {
                redis::cmd("DBSIZE")
                    .query::<u64>(&mut node.connection())
                    .unwrap_or(0)
            })
            .sum()
    }
}
