use super::*;

/// What the parser says to `broker ARGS`, which it must refuse.
fn refusal(args: &[&str]) -> String {
    Cli::try_parse_from([&["broker"], args].concat())
        .unwrap_err()
        .to_string()
}

#[test]
fn fsync_is_always_never_or_an_interval() {
    let parse = |text: &str| text.parse::<FsyncSetting>().map(Fsync::from);
    assert_eq!(parse("always"), Ok(Fsync::Always));
    assert_eq!(parse("never"), Ok(Fsync::Never));
    assert_eq!(
        parse("100ms"),
        Ok(Fsync::Interval(Duration::from_millis(100)))
    );
    for (wrong, expected) in [
        (
            "sometimes",
            "expected always, never or a duration such as 100ms",
        ),
        ("", "expected always, never or a duration such as 100ms"),
        ("0ms", "the sync interval is from 1ms to 1h"),
        ("2h", "the sync interval is from 1ms to 1h"),
        ("0", "the sync interval is from 1ms to 1h"),
        ("-1", "a duration cannot be negative"),
        // A bare number needs its unit, as every duration does.
        ("250", "give a unit, e.g. 5s or 100ms"),
        ("99999999999999999999", "give a unit, e.g. 5s or 100ms"),
    ] {
        let error = parse(wrong).unwrap_err();
        assert!(error.contains(expected), "{wrong:?}: {error}");
    }
    let cli = Cli::try_parse_from(["broker", "--data-dir", "/tmp/x"]).unwrap();
    assert_eq!(cli.serve.fsync(), Fsync::Always);
    let error = refusal(&["--fsync", "-1"]);
    assert!(error.contains("cannot be negative"), "{error}");
}

#[test]
fn options_that_do_nothing_with_the_others_given_are_named() {
    let ignored = |args: &[&str]| {
        let cli = Cli::try_parse_from([&["broker"], args].concat()).unwrap();
        cli.serve.options_without_effect()
    };
    assert!(ignored(&[]).is_empty());
    assert!(ignored(&["--data-dir", "/tmp/x", "--fsync", "100ms"]).is_empty());
    assert!(ignored(&["--store", "nats://127.0.0.1:4222", "--replicas", "3"]).is_empty());
    let both = ignored(&["--fsync", "never", "--replicas", "3"]);
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both[0].starts_with("--fsync does nothing without --data-dir"));
    assert!(both[1].starts_with("--replicas does nothing without --store"));
}

#[test]
fn numbers_are_read_with_their_sign_and_refused_out_of_range() {
    for (option, expected) in [
        ("--port", "the port is from 0 to 65535"),
        ("--max-topics", "the topic limit is from 1 to 4096"),
        (
            "--dead-letter-limit",
            "the dead-letter limit is from 0 to 10000",
        ),
        (
            "--max-deliveries",
            "the delivery limit is a whole number, 0 or more",
        ),
        ("--replicas", "the replica count is from 1 to 5"),
        ("--threads", "the thread count is from 1 to 256"),
        (
            "--max-connections",
            "the connection limit is from 1 to 65536",
        ),
        ("--call-timeout", "a duration cannot be negative"),
    ] {
        let error = refusal(&[option, "-1"]);
        assert!(error.contains(expected), "{option}: {error}");
    }
}

#[test]
fn the_broker_to_ask_is_host_colon_port() {
    for command in ["stats", "dead-letters"] {
        let error = refusal(&[command, "--broker", "127.0.0.1"]);
        assert!(error.contains("expected HOST:PORT"), "{error}");
    }
}

#[test]
fn max_deliveries_is_a_limit_or_zero_for_none() {
    let limit = |args: &[&str]| {
        let cli = Cli::try_parse_from([&["broker"], args].concat()).unwrap();
        cli.serve.settings().max_deliveries.map(|limit| limit.get())
    };
    assert_eq!(limit(&[]), Some(DEFAULT_MAX_DELIVERIES.get()));
    assert_eq!(limit(&["--max-deliveries", "3"]), Some(3));
    assert_eq!(limit(&["--max-deliveries", "0"]), None);
    assert!(Cli::try_parse_from(["broker", "--max-deliveries", "-1"]).is_err());
}

#[test]
fn store_is_a_list_of_nats_servers_with_the_scheme_once_or_on_each() {
    let parse = |text: &str| text.parse::<NatsServers>().map(|servers| servers.0);
    let both = Ok(vec![
        "nats://127.0.0.1:4222".to_owned(),
        "nats://127.0.0.1:4223".to_owned(),
    ]);
    for form in [
        "nats://127.0.0.1:4222,127.0.0.1:4223",
        "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
        "nats://127.0.0.1:4222, 127.0.0.1:4223",
    ] {
        assert_eq!(parse(form), both, "{form}");
    }
    assert_eq!(
        parse("nats://a:4222,b:4223,nats://c:4224"),
        Ok(vec![
            "nats://a:4222".to_owned(),
            "nats://b:4223".to_owned(),
            "nats://c:4224".to_owned()
        ])
    );
    assert_eq!(
        parse("nats://[::1]:4222"),
        Ok(vec!["nats://[::1]:4222".into()])
    );
    for wrong in [
        "127.0.0.1:4222",
        "127.0.0.1:4222,nats://127.0.0.1:4223",
        "nats://127.0.0.1:4222,tls://127.0.0.1:4223",
        "nats://127.0.0.1",
        "nats://127.0.0.1:4222,127.0.0.1",
        "nats://:4222",
        "nats://h:99999",
        "nats://127.0.0.1:4222,",
        "",
    ] {
        let error = parse(wrong).unwrap_err();
        assert!(error.contains(NATS_SERVERS), "{wrong:?}: {error}");
    }
    let error = refusal(&["--store", "127.0.0.1:4222"]);
    assert!(
        error.contains("expected nats://HOST:PORT[,HOST:PORT...]"),
        "{error}"
    );
    let both = Cli::try_parse_from([
        "broker",
        "--data-dir",
        "/tmp/x",
        "--store",
        "nats://127.0.0.1:4222",
    ]);
    assert!(both.is_err(), "--data-dir and --store exclude each other");
}
