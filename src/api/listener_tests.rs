use super::*;

/// A self-signed certificate for `name` and its PKCS#8 key, as PEM.
fn pair(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}

fn end_entity(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[test]
fn a_sound_pair_loads_and_a_changed_one_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = pair("a.test");
    let (c, k) = write(dir.path(), &first);
    let certs = ReloadingCert::load(&c, &k).unwrap();
    assert_eq!(certs.chain()[0], end_entity(&first.0));
    assert!(!certs.reload().unwrap(), "unchanged files are not reloaded");

    let second = pair("b.test");
    write(dir.path(), &second);
    assert!(certs.reload().unwrap());
    assert_eq!(certs.chain()[0], end_entity(&second.0));
    assert!(!certs.reload().unwrap());
}

#[test]
fn a_broken_replacement_is_refused_once_and_the_old_pair_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let first = pair("a.test");
    let (c, k) = write(dir.path(), &first);
    let certs = ReloadingCert::load(&c, &k).unwrap();

    // A new certificate with the old key: they do not fit.
    let other = pair("b.test");
    std::fs::write(&c, &other.0).unwrap();
    let err = certs.reload().unwrap_err().to_string();
    assert!(
        err.contains("does not fit") && err.contains("tls.crt"),
        "{err}"
    );
    assert_eq!(certs.chain()[0], end_entity(&first.0));
    // The same broken files are not retried.
    assert!(!certs.reload().unwrap());

    std::fs::write(&c, "garbage").unwrap();
    let err = certs.reload().unwrap_err().to_string();
    assert!(
        err.contains("tls.crt") && err.contains("no PEM CERTIFICATE"),
        "{err}"
    );
    assert_eq!(certs.chain()[0], end_entity(&first.0));

    // Fixing the files takes them.
    write(dir.path(), &other);
    assert!(certs.reload().unwrap());
    assert_eq!(certs.chain()[0], end_entity(&other.0));
}

#[test]
fn unusable_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = pair("a.test");
    let (c, k) = write(dir.path(), &good);

    let missing = dir.path().join("missing.crt");
    let err = ReloadingCert::load(&missing, &k).unwrap_err().to_string();
    assert!(
        err.contains("missing.crt") && err.contains("certificate"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key").unwrap();
    let err = ReloadingCert::load(&c, &garbage).unwrap_err().to_string();
    assert!(
        err.contains("garbage.key") && err.contains("PRIVATE KEY"),
        "{err}"
    );

    // Well-formed PEM around bytes that are not a certificate.
    let bogus = dir.path().join("bogus.crt");
    std::fs::write(
        &bogus,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = ReloadingCert::load(&bogus, &k).unwrap_err().to_string();
    assert!(err.contains("bogus.crt"), "{err}");
}

/// Runs openssl in `dir`, returning its stdout.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn rsa_and_sec1_keys_load_too() {
    // rcgen writes PKCS#8; openssl's traditional forms are PKCS#1 (RSA
    // PRIVATE KEY) and SEC1 (EC PRIVATE KEY).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (kind, newkey, convert) in [
        ("RSA PRIVATE KEY", "rsa:2048", "rsa"),
        ("EC PRIVATE KEY", "ec", "ec"),
    ] {
        let mut args = vec![
            "req",
            "-x509",
            "-nodes",
            "-subj",
            "/CN=a.test",
            "-days",
            "1",
        ];
        args.extend(["-keyout", "p8.pem", "-out", "tls.crt", "-newkey", newkey]);
        if newkey == "ec" {
            args.extend(["-pkeyopt", "ec_paramgen_curve:P-256"]);
        }
        openssl(d, &args);
        let mut args = vec![convert, "-in", "p8.pem"];
        if convert == "rsa" {
            args.push("-traditional");
        }
        let key = openssl(d, &args);
        assert!(key.contains(&format!("BEGIN {kind}")), "{key}");
        std::fs::write(d.join("tls.key"), key).unwrap();
        ReloadingCert::load(&d.join("tls.crt"), &d.join("tls.key")).unwrap();
    }
}

#[tokio::test]
async fn handlers_see_the_callers_address_through_the_listener() {
    use axum::extract::ConnectInfo;
    use axum::serve::ListenerExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let prom = prometheus::Registry::new();
    // The same tap as `api::serve`, for `ConnectInfo<SocketAddr>`.
    let listener = ApiListener::new(tcp, Settings::default(), &prom)
        .unwrap()
        .tap_io(|_| {});
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(
            |ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() },
        ),
    );
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let me = client.local_addr().unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(&me.to_string()), "{answer}");
    // The server closes its side just after the response: allow it a moment.
    let open = || {
        prom.gather()
            .into_iter()
            .find(|m| m.name() == "waymark_api_connections")
            .map(|m| m.get_metric()[0].get_gauge().get_value())
    };
    for _ in 0..100 {
        if open() == Some(0.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the connection is still counted open: {:?}", open());
}
