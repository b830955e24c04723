//! Other ways to reach a server: TLS (`rediss://`, with the CA given by
//! `--source-tls-ca`, certificates always verified) and unix sockets.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A CA and a server certificate for localhost / 127.0.0.1, as PEM files.
struct Certificates {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_certificates(dir: &Path) -> Certificates {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "redis-ferry test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
    let certificates = Certificates {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&certificates.ca, ca.pem()).unwrap();
    std::fs::write(&certificates.cert, server_cert.pem()).unwrap();
    std::fs::write(&certificates.key, server_key.serialize_pem()).unwrap();
    certificates
}

/// A port nobody listens on right now, for the TLS listener.
fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_tls_source_is_copied_with_its_ca_and_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = make_certificates(dir.path());
    let tls_port = spare_port().to_string();
    let (cert, key, ca) = (
        certificates.cert.display().to_string(),
        certificates.key.display().to_string(),
        certificates.ca.display().to_string(),
    );
    // The plain port is only for the test's own readiness check and data.
    let source = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    fill_every_type(&mut source.connection(), "tls");
    let target = RedisServer::start();
    let tls_url = format!("rediss://localhost:{tls_port}");
    let journal = journal_in(&dir);

    // The test CA is in no trust store: without --source-tls-ca the
    // certificate is not trusted, and nothing is copied.
    let output = ferry(&[
        "run",
        "--source",
        &tls_url,
        "--target",
        &target.url(),
        "--journal",
        &journal,
    ]);
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains(&format!("cannot connect to source {tls_url}")),
        "{}",
        describe(&output)
    );
    assert!(
        stderr(&output).to_lowercase().contains("certificate"),
        "{}",
        describe(&output)
    );

    let output = ferry(&[
        "run",
        "--source",
        &tls_url,
        "--source-tls-ca",
        &ca,
        "--target",
        &target.url(),
        "--journal",
        &journal,
        "--progress",
        "off",
    ]);
    assert_exit(&output, 0);
    assert_servers_equal(&source, &target, &[0]);
    // The CA path is stored with the job, so later commands reach the
    // source again without being told.
    let output = ferry(&["retry", "--journal", &journal, "--progress", "off"]);
    assert_exit(&output, 0);
}

#[test]
fn a_unix_socket_source_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let socket_text = socket.display().to_string();
    let source =
        RedisServer::start_with(&["--unixsocket", &socket_text, "--unixsocketperm", "700"]);
    fill_strings(&mut source.connection(), "sock", 500, Some(7));
    fill_strings(&mut source.connection_db(3), "sock3", 50, None);
    let target = RedisServer::start();
    let output = run_job(
        &format!("unix://{socket_text}"),
        &target.url(),
        &journal_in(&dir),
        &[],
    );
    assert_exit(&output, 0);
    assert_servers_equal(&source, &target, &[0, 3]);
}
