//! TLS under the handshake, with certificates from `broker tls-init`: the whole lab in TLS, a
//! certificate from another CA refused, each side told in one line when only the other has
//! TLS, and the access token still enforced inside TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use broker::Settings;
use lab::RunningBroker;
use stubs::BrokerClient;
use system_tests::*;
use transport::{AccessToken, ClientTls, ConnectError, HandshakeError, TlsFiles};

/// `broker tls-init DIR` into a new directory under `parent`: the directory.
fn tls_init(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    let output = Command::new(program("broker"))
        .arg("tls-init")
        .arg(&dir)
        .output()
        .expect("run broker tls-init");
    assert!(
        output.status.success(),
        "tls-init failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

/// A broker in this process serving TLS with the files in `dir`, and dialling factories in TLS.
async fn tls_broker(dir: &Path, token: AccessToken) -> RunningBroker {
    let files = TlsFiles::in_dir(dir);
    let mut settings = Settings {
        factory_tls: files.client().expect("the CA loads"),
        ..Settings::default()
    };
    settings.admission.tls = files.server().expect("the certificate loads");
    settings.admission.token = token;
    RunningBroker::start(0, settings, Recorder::default().observer())
        .await
        .expect("bind a loopback port")
}

async fn dial(
    address: SocketAddr,
    token: &AccessToken,
    tls: Option<&ClientTls>,
) -> Result<BrokerClient, ConnectError> {
    transport::connect_broker(&address.to_string(), Duration::from_secs(3), token, tls).await
}

/// `broker ARGS...` run to its end, which must be a failure: its standard error.
async fn broker_fails(args: &[&str]) -> String {
    let mut command = Command::new(program("broker"));
    command.args(args);
    failed_start(command).await
}

/// Checks that `broker stats` said, on one line, that it cannot reach `address` and why.
fn assert_cannot_reach(said: &str, address: SocketAddr, why: &str) {
    assert_eq!(
        said.trim(),
        format!("broker stats: cannot reach broker at {address} ({why})"),
        "one clear line"
    );
}

#[tokio::test]
async fn tls_init_writes_a_ca_and_a_certificate_for_this_machine_and_never_overwrites_them() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("tls");
    let output = Command::new(program("broker"))
        .arg("tls-init")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success());
    let said = String::from_utf8_lossy(&output.stdout);
    let with_dir = format!("--tls-dir {}", dir.display());
    assert!(
        said.contains(&format!("cargo run -p broker -- {with_dir}"))
            && said.contains(&format!("cargo run -p factory -- {with_dir}")),
        "the two commands to use them: {said}"
    );
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        assert!(dir.join(file).is_file(), "{file} written");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is its owner's only");
    }
    let files = TlsFiles::in_dir(&dir);
    assert!(files.server().unwrap().is_some() && files.client().unwrap().is_some());

    let before = std::fs::read(dir.join("key.pem")).unwrap();
    let refused = broker_fails(&["tls-init", &dir.display().to_string()]).await;
    assert!(refused.contains("already exists"), "{refused}");
    assert_eq!(std::fs::read(dir.join("key.pem")).unwrap(), before);
}

#[tokio::test]
async fn the_whole_lab_runs_in_tls_processes_and_the_pipeline_s_calls_included() {
    let temp = tempfile::tempdir().unwrap();
    let dir = tls_init(temp.path(), "tls");
    let dir_arg = dir.display().to_string();
    let port = free_port().to_string();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _broker = Process::start(
        "broker",
        &[
            "--port",
            &port,
            "--http",
            "off",
            "--quiet",
            "--tls-dir",
            &dir_arg,
        ],
    );
    let tls = TlsFiles::in_dir(&dir).client().unwrap();
    let mut client = None;
    eventually_async("the TLS broker answers", async || {
        client = dial(address, &AccessToken::none(), tls.as_ref()).await.ok();
        client.is_some()
    })
    .await;
    let client = client.unwrap();
    // The broker dials the factory in TLS too: the factory serves nothing else.
    let _factory = Process::start(
        "factory",
        &[
            "--port",
            "0",
            "--broker",
            &address.to_string(),
            "--quiet",
            "--tls-dir",
            &dir_arg,
        ],
    );
    let mut miner = Process::start(
        "miner",
        &[
            "--broker",
            &address.to_string(),
            "--count",
            "20",
            "--interval",
            "0",
            "--quiet",
            "--tls-dir",
            &dir_arg,
        ],
    );
    assert!(
        miner.exit_status().await.success(),
        "{}",
        miner.last_errors(10)
    );
    // Every two Multiply results become a Divide job, published and called back in TLS.
    eventually_async("20 multiply and 10 divide jobs completed", async || {
        let stats = client.stats(tarpc::context::current()).await.unwrap();
        let completed = |name: &str| {
            stats
                .topics
                .iter()
                .find(|topic| topic.name == name)
                .map_or(0, |topic| topic.completed)
        };
        completed(stubs::MULTIPLY_TOPIC) == 20 && completed(stubs::DIVIDE_TOPIC) == 10
    })
    .await;
    let plaintext = dial(address, &AccessToken::none(), None).await;
    assert!(
        matches!(
            plaintext,
            Err(ConnectError::Handshake {
                source: HandshakeError::TlsRequired,
                ..
            })
        ),
        "the broker served TLS only: {:?}",
        plaintext.err()
    );
}

#[tokio::test]
async fn the_lab_program_runs_in_tls_with_one_option() {
    let temp = tempfile::tempdir().unwrap();
    let dir = tls_init(temp.path(), "tls");
    let cli = lab::cli::LabArgs {
        port: 0,
        factories: 2,
        triplets: false,
        divide_miner: false,
        no_pipeline: false,
        interval: Duration::from_millis(1).into(),
        count: Some(20),
        seed: Some(5),
        tls_dir: Some(dir),
    };
    let summary = lab::cli::run(cli, Default::default())
        .await
        .expect("the lab runs");
    assert_eq!(summary.multiplied, 20, "{summary:?}");
    assert_eq!((summary.failed, summary.unfinished), (0, 0), "{summary:?}");
    assert_eq!(
        summary.divided,
        summary.pipelines_published(),
        "{summary:?}"
    );
    assert!(summary.divided > 0, "{summary:?}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_naming_the_ca_file() {
    let temp = tempfile::tempdir().unwrap();
    let dir = tls_init(temp.path(), "tls");
    let other = tls_init(temp.path(), "other");
    let broker = tls_broker(&dir, AccessToken::none()).await;
    let other_ca = other.join("ca.pem");
    let tls = ClientTls::load(&other_ca).unwrap();
    let error = dial(broker.address, &AccessToken::none(), Some(&tls))
        .await
        .expect_err("refused");
    let expected = format!(
        "its certificate is not signed by the CA in {}",
        other_ca.display()
    );
    assert!(error.to_string().contains(&expected), "{error}");

    let said = broker_fails(&[
        "stats",
        "--broker",
        &broker.address.to_string(),
        "--tls-ca",
        &other_ca.display().to_string(),
    ])
    .await;
    assert_cannot_reach(&said, broker.address, &expected);
    broker.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_on_a_tls_broker_is_told_to_give_the_ca() {
    let temp = tempfile::tempdir().unwrap();
    let dir = tls_init(temp.path(), "tls");
    let broker = tls_broker(&dir, AccessToken::none()).await;
    let said = broker_fails(&["stats", "--broker", &broker.address.to_string()]).await;
    assert_cannot_reach(
        &said,
        broker.address,
        "it requires TLS; give the CA of its certificate with --tls-ca FILE, or --tls-dir DIR",
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_tls_client_on_a_plaintext_broker_is_told_and_the_broker_says_why_it_closed() {
    let temp = tempfile::tempdir().unwrap();
    let dir = tls_init(temp.path(), "tls");
    let port = free_port().to_string();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut broker = Process::start("broker", &["--port", &port, "--http", "off"]);
    broker.client_when_up(address).await;
    let said = broker_fails(&[
        "stats",
        "--broker",
        &address.to_string(),
        "--tls-dir",
        &dir.display().to_string(),
    ])
    .await;
    assert_cannot_reach(
        &said,
        address,
        "it did not answer TLS: was it started without --tls-cert or --tls-dir?",
    );
    eventually("the broker says why it closed the connection", || {
        broker
            .last_errors(20)
            .contains("refused a TLS client at 127.0.0.1:")
    })
    .await;
}

#[tokio::test]
async fn the_token_is_still_enforced_inside_tls() {
    let temp = tempfile::tempdir().unwrap();
    let dir = tls_init(temp.path(), "tls");
    let token = AccessToken::new("s3cret").unwrap();
    let broker = tls_broker(&dir, token.clone()).await;
    let tls = TlsFiles::in_dir(&dir).client().unwrap();

    let without = dial(broker.address, &AccessToken::none(), tls.as_ref()).await;
    assert!(
        matches!(
            without,
            Err(ConnectError::Handshake {
                source: HandshakeError::WrongToken,
                ..
            })
        ),
        "{:?}",
        without.err()
    );
    let wrong = dial(
        broker.address,
        &AccessToken::new("guess").unwrap(),
        tls.as_ref(),
    )
    .await;
    assert!(wrong.is_err(), "a wrong token is refused inside TLS too");

    let client = dial(broker.address, &token, tls.as_ref())
        .await
        .expect("the right token inside TLS is served");
    client
        .stats(tarpc::context::current())
        .await
        .expect("the broker answers");
    broker.stop().await;
}

#[tokio::test]
async fn lab_mark_marks_a_factory_over_tls_with_the_tls_dir_in_its_command() {
    let temp = tempfile::tempdir().unwrap();
    let dir = tls_init(temp.path(), "tls");
    let factory = format!(
        "{} --port {{port}} --broker {{broker}} --tls-dir {{tls-dir}}",
        program("factory").display()
    );
    let args = lab::mark::MarkArgs {
        tls_dir: Some(dir),
        ..lab::mark::MarkArgs::new(&factory)
    };
    // Part 2b publishes from the factory's pipeline: the factory dials the harness's broker, and
    // the broker dials the factory, both in TLS.
    let report = lab::mark::run(&args).await;
    assert!(report.all_passed(), "{report}");

    // The same factory without TLS cannot take the harness's calls.
    let plaintext = format!(
        "{} --port {{port}} --broker {{broker}}",
        program("factory").display()
    );
    let args = lab::mark::MarkArgs {
        parts: vec![lab::mark::Part::One],
        start_timeout: Duration::from_secs(10).into(),
        check_timeout: Duration::from_secs(2).into(),
        ..args
    };
    let args = lab::mark::MarkArgs {
        factory: plaintext,
        ..args
    };
    assert!(!lab::mark::run(&args).await.all_passed());
}
