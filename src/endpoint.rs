//! Where a server is and how to log in: parsing connection URLs, taking
//! passwords from the environment, and showing URLs with the password hidden.
//!
//! Accepted forms (see the contract): `redis://[[user]:password@]host[:port][/db]`,
//! `rediss://...` for TLS, and `unix:///path/to/socket[?db=N]`. A password
//! from `REDIS_FERRY_SOURCE_PASSWORD` / `REDIS_FERRY_TARGET_PASSWORD` wins
//! over the one in the URL. The password lives only in memory: [`Endpoint::redacted`]
//! is what goes to the journal, logs and errors, and it shows `***`
//! whenever a password is (or was) needed, so a later command knows to ask
//! for it again.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use percent_encoding::percent_decode_str;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::exit::usage_error;

/// Which side of the migration a server is on; used in every message and to
/// pick the password environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Source,
    Target,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Target => "target",
        }
    }

    /// The environment variable whose password wins over the URL's.
    pub fn password_variable(self) -> &'static str {
        match self {
            Role::Source => "REDIS_FERRY_SOURCE_PASSWORD",
            Role::Target => "REDIS_FERRY_TARGET_PASSWORD",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text shown in place of a password.
pub const REDACTED: &str = "***";

/// How long to wait for a TCP/TLS connection to be established.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Network location of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp { host: String, port: u16 },
    Tls { host: String, port: u16 },
    Unix(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } | Address::Tls { host, port } => {
                if host.contains(':') {
                    write!(f, "[{host}]:{port}")
                } else {
                    write!(f, "{host}:{port}")
                }
            }
            Address::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A server to connect to, with its credentials. `Debug` never shows the
/// password.
#[derive(Clone)]
pub struct Endpoint {
    pub role: Role,
    pub address: Address,
    pub username: Option<String>,
    password: Option<String>,
    /// The URL this endpoint came from named a password (possibly as `***`),
    /// so connecting without one is a mistake worth explaining.
    password_expected: bool,
    /// Database named in the URL path (`redis://host/3`), if any.
    pub db: Option<i64>,
    /// Extra CA certificate (PEM) for `rediss://`.
    pub tls_ca: Option<PathBuf>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Endpoint {
    /// Parses a URL given for `role`. The error never repeats the URL,
    /// because it may hold a password.
    pub fn parse(role: Role, text: &str) -> Result<Endpoint> {
        parse_url(role, text).map_err(|reason| {
            usage_error(format!(
                "--{role} is not a usable Redis URL: {reason}; expected \
                 redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path/to/socket"
            ))
        })
    }

    /// Applies the password from the role's environment variable, which wins
    /// over the URL's.
    pub fn with_env_password(mut self) -> Endpoint {
        if let Ok(password) = std::env::var(self.role.password_variable())
            && !password.is_empty()
        {
            self.password = Some(password);
            self.password_expected = true;
        }
        self
    }

    pub fn with_tls_ca(mut self, ca: Option<PathBuf>) -> Endpoint {
        if ca.is_some() {
            self.tls_ca = ca;
        }
        self
    }

    /// The URL with any password replaced by `***`: safe for the journal,
    /// logs and error messages.
    pub fn redacted(&self) -> String {
        let mut text = String::new();
        let scheme = match self.address {
            Address::Tcp { .. } => "redis",
            Address::Tls { .. } => "rediss",
            Address::Unix(_) => "unix",
        };
        text.push_str(scheme);
        text.push_str("://");
        let credentials = match (&self.username, self.password_expected) {
            (Some(user), true) => format!("{user}:{REDACTED}@"),
            (Some(user), false) => format!("{user}@"),
            (None, true) => format!(":{REDACTED}@"),
            (None, false) => String::new(),
        };
        match &self.address {
            Address::Unix(path) => {
                text.push_str(&path.display().to_string());
                if let Some(db) = self.db {
                    text.push_str(&format!("?db={db}"));
                }
                if !credentials.is_empty() {
                    let separator = if self.db.is_some() { '&' } else { '?' };
                    if let Some(user) = &self.username {
                        text.push_str(&format!("{separator}user={user}"));
                    }
                    if self.password_expected {
                        let separator = if self.db.is_some() || self.username.is_some() {
                            '&'
                        } else {
                            '?'
                        };
                        text.push_str(&format!("{separator}pass={REDACTED}"));
                    }
                }
            }
            address => {
                text.push_str(&credentials);
                text.push_str(&address.to_string());
                if let Some(db) = self.db {
                    text.push_str(&format!("/{db}"));
                }
            }
        }
        text
    }

    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// Whether the URL promised a password that is not known now (a URL
    /// read back from the journal shows only `***`).
    pub fn password_missing(&self) -> bool {
        self.password_expected && self.password.is_none()
    }

    /// The same credentials and TLS settings at another node's address
    /// (a cluster node announced by `CLUSTER NODES`).
    pub fn at_node(&self, host: &str, port: u16) -> Endpoint {
        let address = match self.address {
            Address::Tls { .. } => Address::Tls {
                host: host.to_string(),
                port,
            },
            _ => Address::Tcp {
                host: host.to_string(),
                port,
            },
        };
        Endpoint {
            address,
            db: None,
            ..self.clone()
        }
    }

    /// Takes the password of `other` (same role) when this endpoint lacks
    /// one; used when a later command line supplies the secret again.
    pub fn take_password_from(&mut self, other: &Endpoint) {
        if other.password.is_some() {
            self.password = other.password.clone();
            self.password_expected = true;
            if other.username.is_some() {
                self.username = other.username.clone();
            }
        }
    }

    /// Opens a connection selecting `db`. Errors read "cannot connect to
    /// source redis://host:port: <reason>".
    pub fn connect(&self, db: i64) -> Result<redis::Connection> {
        let client = self.client(db)?;
        client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(|error| anyhow::anyhow!(describe_connect_error(&error)))
            .with_context(|| format!("cannot connect to {} {}", self.role, self.redacted()))
    }

    /// A client for this endpoint (nothing is sent until it connects).
    pub fn client(&self, db: i64) -> Result<redis::Client> {
        if self.password_missing() {
            bail!(
                "cannot connect to {} {}: it needs a password; set {} or pass --{} with the password",
                self.role,
                self.redacted(),
                self.role.password_variable(),
                self.role
            );
        }
        let info = self.connection_info(db)?;
        match (&self.address, &self.tls_ca) {
            (Address::Tls { .. }, Some(ca)) => {
                let pem = read_ca(ca, self.role)?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
                .with_context(|| {
                    format!(
                        "cannot use --{}-tls-ca {}: not a PEM certificate",
                        self.role,
                        ca.display()
                    )
                })
            }
            _ => redis::Client::open(info)
                .with_context(|| format!("cannot connect to {} {}", self.role, self.redacted())),
        }
    }

    fn connection_info(&self, db: i64) -> Result<ConnectionInfo> {
        let addr = match &self.address {
            Address::Tcp { host, port } => ConnectionAddr::Tcp(host.clone(), *port),
            Address::Tls { host, port } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            },
            Address::Unix(path) => ConnectionAddr::Unix(path.clone()),
        };
        let mut redis_settings = RedisConnectionInfo::default().set_db(db);
        if let Some(user) = &self.username {
            redis_settings = redis_settings.set_username(user);
        }
        if let Some(password) = &self.password {
            redis_settings = redis_settings.set_password(password);
        }
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        Ok(addr
            .into_connection_info()?
            .set_redis_settings(redis_settings)
            .set_tcp_settings(tcp))
    }
}

fn read_ca(path: &Path, role: Role) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "cannot read --{role}-tls-ca {}: check the path",
            path.display()
        )
    })
}

/// Words an operator can act on for the usual connection failures; the
/// redis-rs text for the rest. Never includes the URL (the caller adds the
/// redacted one).
pub fn describe_connect_error(error: &redis::RedisError) -> String {
    let text = error.to_string();
    if error.is_connection_refusal() && text.contains("refused") {
        return "connection refused".to_string();
    }
    if error.is_timeout() {
        return "timed out".to_string();
    }
    if text.contains("WRONGPASS") || text.contains("invalid password") {
        return "authentication failed (wrong user name or password)".to_string();
    }
    if text.contains("NOAUTH") || text.contains("Authentication required") {
        return "authentication required: give the password in the URL or in the environment"
            .to_string();
    }
    text
}

fn parse_url(role: Role, text: &str) -> std::result::Result<Endpoint, String> {
    let url = url::Url::parse(text).map_err(|e| e.to_string())?;
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let scheme = url.scheme();
    let mut endpoint = Endpoint {
        role,
        address: Address::Unix(PathBuf::new()),
        username: None,
        password: None,
        password_expected: false,
        db: None,
        tls_ca: None,
    };
    match scheme {
        "redis" | "rediss" | "valkey" | "valkeys" => {
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or("no host name")?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = url.port().unwrap_or(6379);
            endpoint.address = if matches!(scheme, "rediss" | "valkeys") {
                Address::Tls { host, port }
            } else {
                Address::Tcp { host, port }
            };
            if !url.username().is_empty() {
                endpoint.username = Some(decode(url.username()));
            }
            if let Some(password) = url.password() {
                set_password(&mut endpoint, decode(password));
            }
            let path = url.path().trim_matches('/');
            if !path.is_empty() {
                endpoint.db = Some(parse_db(path)?);
            }
        }
        "unix" | "redis+unix" => {
            let path = url.path();
            if path.is_empty() || path == "/" {
                return Err("no socket path".into());
            }
            endpoint.address = Address::Unix(PathBuf::from(decode(path)));
            for (name, value) in url.query_pairs() {
                match name.as_ref() {
                    "db" => endpoint.db = Some(parse_db(&value)?),
                    "user" => endpoint.username = Some(value.into_owned()),
                    "pass" | "password" => set_password(&mut endpoint, value.into_owned()),
                    other => return Err(format!("unknown parameter {other:?}")),
                }
            }
        }
        other => return Err(format!("unsupported scheme {other:?}")),
    }
    Ok(endpoint)
}

fn set_password(endpoint: &mut Endpoint, password: String) {
    endpoint.password_expected = true;
    // `***` is how the journal shows a password it never stored.
    if password != REDACTED && !password.is_empty() {
        endpoint.password = Some(password);
    } else if password.is_empty() {
        endpoint.password_expected = false;
    }
}

fn parse_db(text: &str) -> std::result::Result<i64, String> {
    text.parse::<i64>()
        .ok()
        .filter(|db| *db >= 0)
        .ok_or_else(|| format!("database {text:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Endpoint {
        Endpoint::parse(Role::Source, text).unwrap()
    }

    #[test]
    fn password_only_and_user_password_forms_parse() {
        let e = parse("redis://:s3cret@db.example:6380/2");
        assert_eq!(
            e.address,
            Address::Tcp {
                host: "db.example".into(),
                port: 6380
            }
        );
        assert_eq!(e.db, Some(2));
        assert!(e.has_password());
        assert_eq!(e.redacted(), "redis://:***@db.example:6380/2");

        let e = parse("rediss://alice:p%40ss@10.0.0.5");
        assert_eq!(e.username.as_deref(), Some("alice"));
        assert_eq!(e.password.as_deref(), Some("p@ss"));
        assert_eq!(e.redacted(), "rediss://alice:***@10.0.0.5:6379");
    }

    #[test]
    fn redacted_urls_never_contain_the_password() {
        for url in [
            "redis://:hunter2@h",
            "redis://bob:hunter2@h:1/3",
            "rediss://:hunter2@h",
            "unix:///tmp/r.sock?db=1&pass=hunter2",
        ] {
            let e = parse(url);
            assert!(!e.redacted().contains("hunter2"), "{}", e.redacted());
            assert!(!format!("{e:?}").contains("hunter2"));
            assert!(e.redacted().contains(REDACTED));
        }
    }

    #[test]
    fn a_redacted_url_read_back_expects_a_password() {
        let e = parse("redis://:***@h:7000");
        assert!(e.password_missing());
        assert_eq!(e.redacted(), "redis://:***@h:7000");
        let mut e = e;
        e.take_password_from(&parse("redis://:pw@h:7000"));
        assert!(!e.password_missing());
    }

    #[test]
    fn unix_sockets_and_ipv6_parse() {
        let e = parse("unix:///var/run/redis.sock?db=4");
        assert_eq!(e.address, Address::Unix("/var/run/redis.sock".into()));
        assert_eq!(e.db, Some(4));
        assert_eq!(e.redacted(), "unix:///var/run/redis.sock?db=4");
        let e = parse("redis://[::1]:7000");
        assert_eq!(e.redacted(), "redis://[::1]:7000");
    }

    #[test]
    fn bad_urls_are_usage_errors_without_the_secret() {
        for bad in ["http://h", "redis://", "redis://:pw@h/x", "not a url :pw"] {
            let error = Endpoint::parse(Role::Target, bad).unwrap_err();
            assert_eq!(
                crate::exit::Exit::for_error(&error),
                crate::exit::Exit::Usage
            );
            assert!(!format!("{error:#}").contains("pw"), "{error:#}");
            assert!(format!("{error:#}").starts_with("--target is not a usable Redis URL"));
        }
    }
}
