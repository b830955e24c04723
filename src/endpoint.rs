//! Where a server is and how to log in: parsing connection URLs, taking
//! passwords from the environment, and showing URLs with the password hidden.
//!
//! Accepted forms (see the contract): `redis://[[user]:password@]host[:port][/db]`,
//! `rediss://...` for TLS, `unix:///path/to/socket[?db=N]`, and `host:port`
//! or `host` as redis-cli users write them (read as `redis://`).
//!
//! Where a password comes from, strongest first: `--source-password-file` /
//! `--target-password-file` (registered once per process with
//! [`use_password_file`], like the environment), then
//! `REDIS_FERRY_SOURCE_PASSWORD` / `REDIS_FERRY_TARGET_PASSWORD`, then the
//! URL. The password lives only in memory: [`Endpoint::redacted`] is what
//! goes to the journal, logs and errors, and it shows `***` whenever a
//! password is (or was) needed, so a later command knows to ask for it
//! again. User names are kept percent-encoded in it, so the URL parses back
//! to the same user.

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisConnectionInfo};

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

    /// The flag whose file's password wins over everything else.
    pub fn password_file_flag(self) -> &'static str {
        match self {
            Role::Source => "--source-password-file",
            Role::Target => "--target-password-file",
        }
    }

    /// The ways to give this side's password, for messages.
    pub fn password_ways(self) -> String {
        format!(
            "{} FILE, {} or a --{self} URL with the password",
            self.password_file_flag(),
            self.password_variable()
        )
    }

    fn index(self) -> usize {
        match self {
            Role::Source => 0,
            Role::Target => 1,
        }
    }
}

/// Where the password in use came from, so a refused one can be traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordOrigin {
    Url,
    Environment,
    File(PathBuf),
}

impl PasswordOrigin {
    fn describe(&self, role: Role) -> String {
        match self {
            PasswordOrigin::Url => format!("the --{role} URL"),
            PasswordOrigin::Environment => role.password_variable().to_string(),
            PasswordOrigin::File(path) => {
                format!("{} {}", role.password_file_flag(), path.display())
            }
        }
    }
}

/// A password read from `--source-password-file` / `--target-password-file`.
#[derive(Clone)]
struct FilePassword {
    path: PathBuf,
    password: String,
}

/// The password files of this process, per role: like the environment,
/// they belong to the whole command, so every endpoint of that role (the
/// one given, the journal's stored one, a cluster's other nodes) uses them.
static PASSWORD_FILES: Mutex<[Option<FilePassword>; 2]> = Mutex::new([None, None]);

/// Reads `path` as `role`'s password (one trailing newline stripped) and
/// makes it win over the environment and the URL for this process. A file
/// that cannot be read, or holds nothing, is a usage error.
pub fn use_password_file(role: Role, path: &Path) -> Result<()> {
    let flag = role.password_file_flag();
    let text = std::fs::read_to_string(path).map_err(|error| {
        usage_error(format!(
            "cannot read {flag} {}: {}; give the path of a readable file holding the password",
            path.display(),
            io_reason(&error)
        ))
    })?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(usage_error(format!(
            "{flag} {} is empty; put the password in it",
            path.display()
        )));
    }
    let mut files = PASSWORD_FILES.lock().unwrap_or_else(|e| e.into_inner());
    files[role.index()] = Some(FilePassword {
        path: path.to_path_buf(),
        password: password.to_string(),
    });
    Ok(())
}

/// An I/O failure in words, without the "(os error N)" tail.
fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::IsADirectory => "it is a directory".to_string(),
        std::io::ErrorKind::InvalidData => "it is not UTF-8 text".to_string(),
        _ => error.to_string(),
    }
}

fn password_file(role: Role) -> Option<FilePassword> {
    let files = PASSWORD_FILES.lock().unwrap_or_else(|e| e.into_inner());
    files[role.index()].clone()
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
    /// Where `password` came from.
    password_origin: Option<PasswordOrigin>,
    /// The URL itself held a password (even if another source won).
    url_had_password: bool,
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
        refuse_unencoded_credentials(role, text)?;
        let text = with_default_scheme(text);
        parse_url(role, &text).map_err(|reason| {
            usage_error(format!(
                "--{role} is not a usable Redis URL: {reason}; expected \
                 redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path/to/socket"
            ))
        })
    }

    /// Applies a password given outside the URL: the role's password file
    /// (see [`use_password_file`]) wins over its environment variable,
    /// which wins over the URL's.
    pub fn with_outside_password(mut self) -> Endpoint {
        if let Some(file) = password_file(self.role) {
            self.set_known_password(file.password, PasswordOrigin::File(file.path));
        } else if let Ok(password) = std::env::var(self.role.password_variable())
            && !password.is_empty()
        {
            self.set_known_password(password, PasswordOrigin::Environment);
        }
        self
    }

    fn set_known_password(&mut self, password: String, origin: PasswordOrigin) {
        self.password = Some(password);
        self.password_origin = Some(origin);
        self.password_expected = true;
    }

    /// Whether the URL itself carried a password (it was on the command
    /// line, where `ps` shows it).
    pub fn url_had_password(&self) -> bool {
        self.url_had_password
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
        let user = self
            .username
            .as_deref()
            .map(|user| utf8_percent_encode(user, USERINFO).to_string());
        let credentials = match (&user, self.password_expected) {
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
                        let user = utf8_percent_encode(user, QUERY_VALUE);
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
            self.password_origin = other.password_origin.clone();
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
            .map_err(|error| anyhow::anyhow!(describe_first_connect_error(&error, self)))
            .with_context(|| format!("cannot connect to {} {}", self.role, self.redacted()))
    }

    /// A client for this endpoint (nothing is sent until it connects).
    pub fn client(&self, db: i64) -> Result<redis::Client> {
        if self.password_missing() {
            bail!(
                "cannot connect to {} {}: it needs a password, which the journal does not keep; give it with {}",
                self.role,
                self.redacted(),
                self.role.password_ways()
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
/// redacted one) nor a password. For an established connection that
/// failed; a first connection gets [`describe_first_connect_error`].
pub fn describe_connect_error(error: &redis::RedisError) -> String {
    let text = error.to_string();
    if error.is_connection_refusal() && text.contains("refused") {
        return "connection refused".to_string();
    }
    if error.is_timeout() {
        return "timed out".to_string();
    }
    if is_refused_password(error) {
        return "authentication failed (wrong user name or password)".to_string();
    }
    if text.contains("NOAUTH") || text.contains("Authentication required") {
        return "authentication required: give the password in the URL or in the environment"
            .to_string();
    }
    text
}

/// [`describe_connect_error`] for the first connection to `endpoint`,
/// where more can be said: a `rediss://` URL at a server that does not
/// speak TLS, and where a refused password came from.
pub fn describe_first_connect_error(error: &redis::RedisError, endpoint: &Endpoint) -> String {
    let text = error.to_string();
    let tls = matches!(endpoint.address, Address::Tls { .. });
    let certificate = text.to_lowercase().contains("certificate");
    if tls && !certificate && (error.is_timeout() || is_tls_garbage(&text)) {
        return not_tls_reason(endpoint, error.is_timeout());
    }
    if is_refused_password(error) {
        return refused_password_reason(endpoint);
    }
    if text.contains("NOAUTH") || text.contains("Authentication required") {
        return format!(
            "authentication required: give the password with {}",
            endpoint.role.password_ways()
        );
    }
    describe_connect_error(error)
}

fn is_refused_password(error: &redis::RedisError) -> bool {
    let text = error.to_string();
    error.kind() == ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("invalid password")
}

/// The server refused the user name or password: say where the password
/// came from, so the operator knows which one to fix.
fn refused_password_reason(endpoint: &Endpoint) -> String {
    let user = match &endpoint.username {
        Some(user) => format!("user {user:?} and its password"),
        None => "the password".to_string(),
    };
    match &endpoint.password_origin {
        Some(origin) => format!(
            "authentication failed: the {} refused {user} (taken from {}); fix it there, or give it with {}",
            endpoint.role,
            origin.describe(endpoint.role),
            endpoint.role.password_ways()
        ),
        None => format!(
            "authentication failed: the {} refused {user}; give the password with {}",
            endpoint.role,
            endpoint.role.password_ways()
        ),
    }
}

/// rustls met bytes that are not TLS: a plain server answered the handshake.
fn is_tls_garbage(text: &str) -> bool {
    let text = text.to_lowercase();
    [
        "invalid content type",
        "corrupt message",
        "invalidcontenttype",
        "received corrupt",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// A `rediss://` connection that timed out or got no TLS back. A plain
/// server often just waits for the end of what it takes for an inline
/// command, so the handshake hangs until the timeout; one plain PING tells
/// for sure.
fn not_tls_reason(endpoint: &Endpoint, timed_out: bool) -> String {
    let what = if timed_out {
        "the TLS handshake timed out"
    } else {
        "the TLS handshake got no TLS reply"
    };
    let plain_url = endpoint.redacted().replacen("rediss://", "redis://", 1);
    if answers_plain_redis(&endpoint.address) {
        format!(
            "{what}: the server answers plain Redis on that port, so it does not speak TLS there; use {plain_url}, or the port of its TLS listener"
        )
    } else {
        format!(
            "{what}: the server may not speak TLS on that port; check the port of its TLS listener, or use {plain_url} if it has none"
        )
    }
}

/// Whether a plain-text PING at `address` gets a Redis reply back.
fn answers_plain_redis(address: &Address) -> bool {
    let Address::Tls { host, port } = address else {
        return false;
    };
    let probe = Duration::from_secs(2);
    let Ok(addresses) = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port)) else {
        return false;
    };
    addresses.take(2).any(|address| {
        let Ok(mut stream) = TcpStream::connect_timeout(&address, probe) else {
            return false;
        };
        stream.set_read_timeout(Some(probe)).ok();
        stream.set_write_timeout(Some(probe)).ok();
        let mut reply = [0u8; 1];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && matches!(reply[0], b'+' | b'-')
    })
}

/// Characters a user name must have encoded in a URL's user-info.
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Characters a query value (`unix://...?user=`) must have encoded.
const QUERY_VALUE: &AsciiSet = &USERINFO.add(b'&').add(b'+');

/// `host:port` and `host`, as redis-cli users write them, mean `redis://`.
fn with_default_scheme(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains("://") || text.is_empty() || text.contains(char::is_whitespace) {
        text.into()
    } else {
        format!("redis://{text}").into()
    }
}

/// A password (or user name) with `#`, `@`, `/` or `?` as is cuts the URL
/// in the wrong place, and the error a URL parser gives then ("invalid
/// port number") hides why. Name the characters and the way out instead,
/// without repeating the URL.
fn refuse_unencoded_credentials(role: Role, text: &str) -> Result<()> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Ok(());
    };
    if scheme.starts_with("unix") || scheme.ends_with("unix") {
        return Ok(());
    }
    let Some(last_at) = rest.rfind('@') else {
        return Ok(());
    };
    let credentials = &rest[..last_at];
    let found: Vec<String> = [('#', "%23"), ('@', "%40"), ('/', "%2F"), ('?', "%3F")]
        .iter()
        .filter(|(c, _)| credentials.contains(*c))
        .map(|(c, encoding)| format!("{c} as {encoding}"))
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(usage_error(format!(
        "--{role} URL has a user name or password with a character that must be percent-encoded in a URL: write {}; or leave the password out of the URL and give it with {} or {} FILE",
        found.join(", "),
        role.password_variable(),
        role.password_file_flag()
    )))
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
        password_origin: None,
        url_had_password: false,
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
        endpoint.password_origin = Some(PasswordOrigin::Url);
        endpoint.url_had_password = true;
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

    #[test]
    fn a_user_name_with_reserved_characters_survives_the_journal() {
        let given = parse("redis://ops%40team%3A1:pw@db.example:6380/3");
        assert_eq!(given.username.as_deref(), Some("ops@team:1"));
        let stored = given.redacted();
        assert_eq!(stored, "redis://ops%40team%3A1:***@db.example:6380/3");
        let again = parse(&stored);
        assert_eq!(again.username, given.username);
        assert_eq!(again.address, given.address);
        assert_eq!(again.db, given.db);
        assert!(again.password_missing());
        assert_eq!(again.redacted(), stored, "stable across round trips");

        assert!(Endpoint::parse(Role::Source, "unix:///tmp/a@b/r.sock").is_ok());
        let socket = parse("unix:///tmp/r.sock?user=a%26b%3Dc&pass=pw");
        assert_eq!(socket.username.as_deref(), Some("a&b=c"));
        let again = parse(&socket.redacted());
        assert_eq!(again.username.as_deref(), Some("a&b=c"));
    }

    #[test]
    fn host_and_port_alone_mean_redis() {
        let e = parse("127.0.0.1:7001");
        assert_eq!(e.redacted(), "redis://127.0.0.1:7001");
        let e = parse("cache.internal");
        assert_eq!(e.redacted(), "redis://cache.internal:6379");
        let e = parse("localhost:6380/2");
        assert_eq!(e.db, Some(2));
        assert_eq!(e.redacted(), "redis://localhost:6380/2");
    }

    #[test]
    fn an_unencoded_hash_or_at_in_a_password_names_the_encoding() {
        for (url, encoding) in [
            ("redis://:pa#ss@h:7000", "# as %23"),
            ("redis://alice:p@ss@h", "@ as %40"),
            ("rediss://:a/b@h", "/ as %2F"),
        ] {
            let error = Endpoint::parse(Role::Source, url).unwrap_err();
            let text = format!("{error:#}");
            assert_eq!(
                crate::exit::Exit::for_error(&error),
                crate::exit::Exit::Usage
            );
            assert!(text.contains(encoding), "{text}");
            assert!(text.contains("REDIS_FERRY_SOURCE_PASSWORD"), "{text}");
            assert!(!text.contains("pa#ss") && !text.contains("p@ss"), "{text}");
        }
        // Encoded, they are fine.
        let e = parse("redis://:pa%23ss@h:7000");
        assert_eq!(e.password.as_deref(), Some("pa#ss"));
    }

    #[test]
    fn a_password_file_must_exist_and_hold_something() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let error = use_password_file(Role::Target, &missing).unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.starts_with("cannot read --target-password-file"),
            "{text}"
        );
        assert!(text.contains("no such file"), "{text}");
        assert_eq!(
            crate::exit::Exit::for_error(&error),
            crate::exit::Exit::Usage
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let text = format!("{:#}", use_password_file(Role::Target, &empty).unwrap_err());
        assert!(text.contains("is empty"), "{text}");
        assert!(password_file(Role::Target).is_none());
    }
}
