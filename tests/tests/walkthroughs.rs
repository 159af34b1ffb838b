//! The walkthroughs of README.md and docs/, run from the docs' own command blocks: a doc edit
//! that breaks one fails here. Each block is read from its section, split into commands as a
//! shell would, and run with three changes: every well-known port (8030, 8031, 8081, 4222,
//! 6222, ...) becomes a free loopback port, defaults included, so that a clash of ports in the
//! doc is a clash here; `cargo run -p X --` becomes the built program X; and a miner that would
//! publish forever gets a `--count`. What is asserted is what the programs did (counts from
//! `broker stats --json`, exit statuses, result lines on standard output, a marking report's
//! scores), never the wording of their logs.
//!
//! Which blocks run here, by the test that runs them:
//! - README, the opening block and the paragraph after it (`cargo run -p lab` and its part
//!   options, with `--count`): [`the_lab_in_one_terminal_runs_each_part_and_stops_by_itself`].
//! - README, "The lab, part by part": each part's blocks, one program a terminal:
//!   [`part_1_the_multiply_factory_runs_as_written`],
//!   [`part_2a_divide_runs_as_written_and_a_zero_divisor_fails_once`] (with the block of
//!   docs/metrics.md, "Watching the broker", on its broker),
//!   [`part_2b_the_pipeline_runs_as_written`], [`part_3_triplets_run_as_written`].
//! - README, "Marking a submission": the `lab mark` block and the example report:
//!   [`marking_a_submission_runs_as_written_and_the_example_report_holds`].
//! - README, "Using the Go lab's programs", and docs/go.md's two blocks:
//!   [`the_go_labs_programs_run_as_written_and_a_go_submission_is_marked`].
//! - docs/jetstream.md, the walkthrough (three nats-servers, two brokers, two factories, two
//!   miners, `stats --watch`): [`the_nats_walkthrough_runs_as_written`].
//!
//! Not run here: the `lab mark` line for `../alice`, a student's project this checkout does not
//! hold (`lab_new.rs` marks a fresh `lab new` project with the same command); docs/benchmarks.md's
//! runs (`bench -- all --smoke` is run by the bench crate's own test; the release runs take
//! minutes).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use system_tests::go::go_program;
use system_tests::{free_ports, program, program_of, stats_at, Process, WAIT};

/// The ports the docs use, each given a free loopback port of its own in every test.
/// A port of a doc that is not here fails the test, rather than run on a port that others use.
const DOC_PORTS: [u16; 14] = [
    8030, 8031, 8032, 8040, 8041, 8050, 8081, 8082, 4222, 4223, 4224, 6222, 6223, 6224,
];

/// The programs' default ports, as docs/cli.md gives them: written out in every command that
/// leaves them out, so that they are moved to free ports as the written ones are.
const BROKER_PORT: u16 = 8030;
const HTTP_PORT: u16 = 8081;
const FACTORY_PORT: u16 = 8050;

/// The jobs a walkthrough's miner publishes, where the doc's would publish until Ctrl-C.
const JOBS: u64 = 20;

/// The pause between two jobs of such a miner: short, so that the walkthroughs run in seconds.
const MINER_INTERVAL: &str = "10ms";

/// How often a test asks the broker for its counts while it waits.
const POLL: Duration = Duration::from_millis(100);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace root")
}

fn read_doc(name: &str) -> String {
    std::fs::read_to_string(root().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// The fenced blocks tagged `lang` in the section of `doc` whose heading starts with `heading`,
/// up to the next heading of the same level or above.
fn blocks(doc: &str, heading: &str, lang: &str) -> Vec<String> {
    let text = read_doc(doc);
    let mut level = None;
    let mut found = Vec::new();
    let mut fence: Option<(String, String)> = None; // (its tag, its lines so far)
    for line in text.lines() {
        if let Some((tag, body)) = fence.as_mut() {
            if line.trim_start().starts_with("```") {
                if level.is_some() && tag == lang {
                    found.push(std::mem::take(body));
                }
                fence = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
            continue;
        }
        if let Some(tag) = line.trim_start().strip_prefix("```") {
            fence = Some((tag.trim().to_owned(), String::new()));
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes == 0 || !line[hashes..].starts_with(' ') {
            continue;
        }
        match level {
            Some(open) if hashes <= open => break,
            None if line[hashes..].trim().starts_with(heading) => level = Some(hashes),
            _ => {}
        }
    }
    assert!(level.is_some(), "{doc} has no heading \"{heading}...\"");
    assert!(
        !found.is_empty(),
        "{doc} has no ```{lang} block under \"{heading}...\""
    );
    found
}

/// The commands of a block as a shell reads them, one a line: words split on blanks, quotes
/// removed, `NAME=value` lines remembered and `$NAME` expanded (a name never set fails the
/// test, as a terminal without it would run the wrong command), comments and blank lines left
/// out. A line that starts with `$ ` (a prompt) is the command and the rest of the block its
/// output; [`prompted`] reads such blocks.
fn commands(block: &str) -> Vec<Vec<String>> {
    let mut variables = HashMap::new();
    let mut found = Vec::new();
    for line in block.lines() {
        let words = shell_words(line, &variables);
        if let [word] = words.as_slice() {
            if let Some((name, value)) = word.split_once('=') {
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                    variables.insert(name.to_owned(), value.to_owned());
                    continue;
                }
            }
        }
        if !words.is_empty() {
            found.push(words);
        }
    }
    found
}

/// One line split into words as `sh` would split it, for what the docs use: blanks, single
/// and double quotes, `$NAME`, and `#` comments.
fn shell_words(line: &str, variables: &HashMap<String, String>) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    let mut quote = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, '#') if word.is_none() => break,
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (Some(q), c) if c == q => quote = None,
            (None | Some('"'), '$') => {
                let mut name = String::new();
                while let Some(&next) = chars.peek() {
                    if !(next.is_ascii_alphanumeric() || next == '_') {
                        break;
                    }
                    name.push(next);
                    chars.next();
                }
                let value = variables
                    .get(&name)
                    .unwrap_or_else(|| panic!("`{line}` uses ${name}, which the block never sets"));
                word.get_or_insert_with(String::new).push_str(value);
            }
            (_, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(quote.is_none(), "`{line}` leaves a quote open");
    words.extend(word);
    words
}

/// A block of a command after a `$ ` prompt and what it printed: the command and the lines.
fn prompted(block: &str) -> (Vec<String>, Vec<String>) {
    let mut lines = block.lines();
    let command = lines
        .next()
        .and_then(|line| line.strip_prefix("$ "))
        .expect("the block opens with a `$ ` prompt");
    (
        shell_words(command, &HashMap::new()),
        lines.map(str::to_owned).collect(),
    )
}

/// One walkthrough's free ports and folders.
struct Walkthrough {
    /// Each port of [`DOC_PORTS`] and the free port that replaces it.
    ports: HashMap<u16, u16>,
    /// Replaces the docs' `/tmp/`.
    dir: tempfile::TempDir,
}

/// A command of a block, started.
struct Running {
    /// The program's name: `broker`, `factory`, `miner`, `lab`, `nats-server`, `go-factory`...
    name: String,
    /// Its arguments, rewritten.
    args: Vec<String>,
    process: Process,
}

impl Running {
    /// The value of option `flag`, if given.
    fn option(&self, flag: &str) -> Option<&str> {
        option(&self.args, flag)
    }

    /// Fails the test unless the program has exited with success within [`WAIT`].
    async fn succeeds(&mut self) {
        let status = self.process.exit_status().await;
        assert!(
            status.success(),
            "{} {:?} ended with {status}; its last words:\n{}",
            self.name,
            self.args,
            self.process.last_errors(20)
        );
    }
}

fn option<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|arg| arg == flag)
        .and_then(|at| args.get(at + 1))
        .map(String::as_str)
}

impl Walkthrough {
    fn new() -> Self {
        Self {
            ports: DOC_PORTS
                .into_iter()
                .zip(free_ports(DOC_PORTS.len()))
                .collect(),
            dir: tempfile::tempdir().expect("a temporary folder"),
        }
    }

    /// The free port that stands for the docs' `port`.
    fn port(&self, port: u16) -> u16 {
        *self
            .ports
            .get(&port)
            .unwrap_or_else(|| panic!("port {port} is not one of the docs' ports"))
    }

    /// `127.0.0.1:` and the free port that stands for the docs' `port`.
    fn address(&self, port: u16) -> String {
        format!("127.0.0.1:{}", self.port(port))
    }

    /// `arg` with the docs' ports and `/tmp/` folders moved to this walkthrough's.
    fn rewrite(&self, arg: &str) -> String {
        if let Some(&free) = arg.parse().ok().and_then(|port| self.ports.get(&port)) {
            return free.to_string();
        }
        const LOOPBACK: &str = "127.0.0.1:";
        let mut out = String::new();
        let mut rest = arg;
        while let Some(at) = rest.find(LOOPBACK) {
            out.push_str(&rest[..at + LOOPBACK.len()]);
            rest = &rest[at + LOOPBACK.len()..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            let port = &rest[..digits];
            match port.parse().ok().and_then(|port| self.ports.get(&port)) {
                Some(free) => out.push_str(&free.to_string()),
                None if port.is_empty() => {} // `127.0.0.1:{port}`, for `lab mark` to fill in.
                None => panic!("`{arg}`: port {port} is not in DOC_PORTS"),
            }
            rest = &rest[digits..];
        }
        out.push_str(rest);
        match out.strip_prefix("/tmp/") {
            Some(path) => self.dir.path().join(path).display().to_string(),
            None => out,
        }
    }

    /// The program and arguments that run `words`, a command of a doc: rewritten, with the
    /// defaults written out and an endless miner bounded.
    fn invocation(&self, words: &[String]) -> (String, PathBuf, Vec<String>) {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let (name, path, doc_args): (String, PathBuf, &[&str]) = match words.as_slice() {
            ["cargo", "run", rest @ ..] => {
                let (cargo, args) = match rest.iter().position(|&word| word == "--") {
                    Some(at) => (&rest[..at], &rest[at + 1..]),
                    None => (rest, &[][..]),
                };
                let package = option_str(cargo, "-p")
                    .unwrap_or_else(|| panic!("`{}` names no package", words.join(" ")));
                assert!(
                    cargo
                        .iter()
                        .all(|&word| ["-p", package, "-q", "--quiet"].contains(&word)),
                    "`{}`: cargo options this test does not know",
                    words.join(" ")
                );
                (package.to_owned(), program(package), args)
            }
            ["nats-server", args @ ..] => ("nats-server".into(), "nats-server".into(), args),
            ["go", "run", package, args @ ..] => {
                let package = package.trim_start_matches("./");
                (format!("go-{package}"), go_program(package), args)
            }
            _ => panic!("`{}`: a command this test cannot run", words.join(" ")),
        };
        let mut args: Vec<String> = doc_args.iter().map(|arg| self.rewrite(arg)).collect();
        for flag in ["--port", "-p"] {
            if let Some(port) = option_str(doc_args, flag) {
                assert!(
                    port == "0" || self.ports.contains_key(&port.parse().unwrap_or(0)),
                    "`{}`: port {port} is not in DOC_PORTS",
                    words.join(" ")
                );
            }
        }
        fn default(args: &mut Vec<String>, flag: &str, value: String) {
            if option(args, flag).is_none() {
                args.extend([flag.to_owned(), value]);
            }
        }
        let first = doc_args.first().copied().unwrap_or_default();
        match name.as_str() {
            "broker" if ["stats", "dead-letters"].contains(&first) => {
                default(&mut args, "--broker", self.address(BROKER_PORT));
            }
            "broker" => {
                default(&mut args, "--port", self.port(BROKER_PORT).to_string());
                default(&mut args, "--http", self.address(HTTP_PORT));
            }
            "factory" => {
                default(&mut args, "--port", self.port(FACTORY_PORT).to_string());
                default(&mut args, "--broker", self.address(BROKER_PORT));
            }
            "miner" => {
                default(&mut args, "--broker", self.address(BROKER_PORT));
                if option(&args, "--job").is_none() && option(&args, "--count").is_none() {
                    default(&mut args, "--count", JOBS.to_string());
                    default(&mut args, "--interval", MINER_INTERVAL.into());
                }
            }
            "lab" if !["mark", "new"].contains(&first) => {
                default(&mut args, "--port", self.port(BROKER_PORT).to_string());
            }
            "go-factory" => {
                default(&mut args, "-ip", self.address(FACTORY_PORT));
                default(&mut args, "-broker", self.address(BROKER_PORT));
            }
            "nats-server" => {
                // Its monitoring port, for the test to see the cluster formed.
                default(&mut args, "-m", free_ports(1)[0].to_string());
            }
            "go-miner" => {
                default(&mut args, "-broker", self.address(BROKER_PORT));
                default(&mut args, "-count", JOBS.to_string());
                default(&mut args, "-interval", MINER_INTERVAL.into());
            }
            _ => {}
        }
        (name, path, args)
    }

    /// Starts `words` as a terminal would, and waits until a broker or a nats-server started so
    /// listens, as the next terminal's command expects.
    async fn start(&self, words: &[String]) -> Running {
        let (name, path, args) = self.invocation(words);
        let mut command = Command::new(path);
        command.args(&args).current_dir(root());
        let mut running = Running {
            name,
            args,
            process: Process::spawn(command),
        };
        let listens = match running.name.as_str() {
            "broker" if !["stats", "dead-letters"].contains(&running.args[0].as_str()) => {
                running.option("--port")
            }
            "nats-server" => running.option("-p"),
            _ => None,
        }
        .map(str::to_owned);
        if let Some(port) = listens {
            let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("a port");
            wait_listening(&mut running, address).await;
        }
        running
    }

    /// Starts every command of `block` in order, each as in a terminal of its own.
    async fn start_block(&self, block: &str) -> Vec<Running> {
        let mut started = Vec::new();
        for words in commands(block) {
            started.push(self.start(&words).await);
        }
        started
    }

    /// Runs `words` to its end, within [`WAIT`]: its status and standard output.
    async fn run(&self, words: &[String]) -> (std::process::ExitStatus, Vec<String>) {
        let (_, path, args) = self.invocation(words);
        let output = tokio::process::Command::new(path)
            .args(&args)
            .current_dir(root())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(WAIT, output)
            .await
            .unwrap_or_else(|_| panic!("{args:?} did not end within {WAIT:?}"))
            .expect("run the program");
        let printed = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        (output.status, printed)
    }

    /// `broker stats --json` of the broker that the docs' `port` stands for.
    async fn stats(&self, port: u16) -> Option<Value> {
        stats_at(&self.address(port)).await
    }

    /// Waits until the broker at the docs' `port` reports stats for which `settled` holds;
    /// fails the test with what the broker said last, and the programs' last words, if
    /// [`WAIT`] passes first.
    async fn wait_stats(
        &self,
        port: u16,
        what: &str,
        running: &[Running],
        settled: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.stats(port).await;
            if let Some(stats) = stats.as_ref().filter(|stats| settled(stats)) {
                return stats.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {WAIT:?} waiting until {what}; the broker's last stats: \
                     {stats:#?}\n{}",
                    last_words(running)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn option_str<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|&arg| arg == flag)
        .and_then(|at| args.get(at + 1))
        .copied()
}

/// Waits until the standard output of `running` so far holds what `holds` looks for; fails the
/// test with what it printed if [`WAIT`] passes first.
async fn wait_printed(running: &Running, what: &str, holds: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !holds(&running.process.lines()) {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting until {} printed {what}: {:?}",
            running.name,
            running.process.lines()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `running` serves at `address` (a broker: answers the handshake, which it does
/// once its store is ready, although it takes connections before); fails the test if it exits
/// or [`WAIT`] passes first.
async fn wait_listening(running: &mut Running, address: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        let serves = if running.name == "broker" {
            let token = transport::AccessToken::none();
            transport::connect_broker(&address.to_string(), Duration::from_secs(1), &token, None)
                .await
                .is_ok()
        } else {
            TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
        };
        if serves {
            return;
        }
        let exited = running.process.has_exited();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "{} {:?} did not serve at {address} (exited: {exited:?}); its last words:\n{}",
            running.name,
            running.args,
            running.process.last_errors(20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until each nats-server in `running` reports the JetStream cluster's leader on its
/// monitoring port; fails the test if [`WAIT`] passes first.
async fn wait_cluster(running: &[Running]) {
    let deadline = Instant::now() + WAIT;
    for node in running {
        let monitor: SocketAddr = format!("127.0.0.1:{}", node.option("-m").expect("-m"))
            .parse()
            .expect("a port");
        loop {
            let jsz = system_tests::try_http_get(monitor, "/jsz").await;
            if jsz.as_ref().is_ok_and(|jsz| jsz.contains("\"leader\"")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the NATS cluster has no leader after {WAIT:?}: {jsz:?}\n{}",
                last_words(running)
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Waits until the brokers in `running` hold every subscription of the factories in it (one
/// for each topic, multiply and divide); fails the test if [`WAIT`] passes first.
async fn wait_subscribed(running: &[Running]) {
    let factories = running.iter().filter(|r| r.name == "factory").count();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut subscriptions = 0;
        for broker in running.iter().filter(|r| r.name == "broker") {
            let address = format!("127.0.0.1:{}", broker.option("--port").expect("--port"));
            if let Some(stats) = stats_at(&address).await {
                subscriptions += stats["subscribers"].as_array().map_or(0, Vec::len);
            }
        }
        if subscriptions == 2 * factories {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the factories did not subscribe within {WAIT:?}\n{}",
            last_words(running)
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The last lines each program wrote on standard error, for a failing test to show.
fn last_words(running: &[Running]) -> String {
    running
        .iter()
        .map(|r| {
            format!(
                "--- {} {:?}:\n{}\n",
                r.name,
                r.args,
                r.process.last_errors(8)
            )
        })
        .collect()
}

/// The object of topic `name` in `broker stats --json`.
fn topic<'a>(stats: &'a Value, name: &str) -> Option<&'a Value> {
    stats["topics"]
        .as_array()?
        .iter()
        .find(|topic| topic["name"] == name)
}

/// A count of a topic's object (0 for a topic that does not exist).
fn count(stats: &Value, name: &str, field: &str) -> u64 {
    topic(stats, name).map_or(0, |topic| topic[field].as_u64().expect("a count"))
}

/// Whether topic `name` has `published` jobs, each completed or failed, none waiting.
fn settled(stats: &Value, name: &str, published: u64) -> bool {
    topic(stats, name).is_some_and(|topic| {
        topic["published"] == published
            && topic["ready"] == 0
            && topic["in_flight"] == 0
            && topic["completed"].as_u64().unwrap_or(0) + topic["failed"].as_u64().unwrap_or(0)
                == published
    })
}

/// The Multiply jobs each subscriber in `stats` completed.
fn multiplied_by_each(stats: &Value) -> Vec<u64> {
    stats["subscribers"]
        .as_array()
        .expect("subscribers")
        .iter()
        .filter(|subscriber| subscriber["topic"] == "multiply")
        .map(|subscriber| subscriber["completed"].as_u64().expect("a count"))
        .collect()
}

/// The Divide jobs that pipelines publish for the Multiply results of each factory, which
/// groups its own results by `group` (2 for Pairs, 3 for Triplets).
fn grouped(results: &[u64], group: u64) -> u64 {
    results.iter().map(|results| results / group).sum()
}

/// The product lines a factory printed (`12 * 34 = 408`, `1 * 2 * 3 = 6`): each one checked.
fn checked_products(lines: &[String]) -> usize {
    let mut checked = 0;
    for line in lines {
        let Some((operands, result)) = line.split_once(" = ") else {
            continue;
        };
        if !operands.contains(" * ") {
            continue;
        }
        let product: i128 = operands
            .split(" * ")
            .map(|x| x.parse::<i128>().expect("an operand"))
            .product();
        assert_eq!(product.to_string(), result, "the factory printed {line:?}");
        checked += 1;
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_in_one_terminal_runs_each_part_and_stops_by_itself() {
    // README's opening block starts the lab; the paragraph after it names an option a part
    // and a short run that stops by itself. Each part runs here as that short run.
    let opening = &blocks("README.md", "pairbroker", "sh")[0];
    let lab = commands(opening)
        .into_iter()
        .find(|words| words.contains(&"lab".to_owned()))
        .expect("README's opening block starts the lab");
    let readme = read_doc("README.md");
    let short_run = "--interval 10ms --count 100";
    for option in ["--divide-miner", "--triplets", "--no-pipeline", short_run] {
        assert!(
            readme.contains(&format!("{option}`")),
            "README no longer offers `{option}`"
        );
    }
    let walkthrough = Walkthrough::new();
    // (options, how many Multiply results a pipeline groups (0: no pipeline), divide jobs
    // from a divide miner)
    let parts: [(&[&str], u64, u64); 4] = [
        (&[], 2, 0),
        (&["--no-pipeline"], 0, 0),
        (&["--divide-miner"], 2, 100),
        (&["--triplets"], 3, 0),
    ];
    for (option, group, divide_miner) in parts {
        let mut words = lab.clone();
        if !words.contains(&"--".to_owned()) {
            words.push("--".into());
        }
        words.extend(option.iter().map(|&o| o.to_owned()));
        words.extend(short_run.split(' ').map(str::to_owned));
        let (status, printed) = walkthrough.run(&words).await;
        assert!(status.success(), "{words:?} ended with {status}");
        // lab: 100 multiply and 50 divide jobs completed, 0 failed; ...
        let summary = printed
            .iter()
            .find_map(|line| line.strip_prefix("lab: "))
            .unwrap_or_else(|| panic!("{words:?} printed no summary: {printed:?}"));
        let numbers: Vec<u64> = summary
            .split(|c: char| !c.is_ascii_digit())
            .filter(|n| !n.is_empty())
            .take(3)
            .map(|n| n.parse().unwrap())
            .collect();
        let [multiplied, divided, failed] = numbers[..] else {
            panic!("{words:?}: a summary without its counts: {summary}")
        };
        assert_eq!((multiplied, failed), (100, 0), "{words:?}: {summary}");
        // Two factories, each grouping its own results: at most one group short each.
        let (most, least) = match group {
            0 => (0, 0),
            g => (100 / g, 100 / g - 1),
        };
        assert!(
            (divide_miner + least..=divide_miner + most).contains(&divided),
            "{words:?}: {summary}"
        );
    }
}

/// Runs the first block of README's section `part` (broker, factories, miners), waits until
/// every miner has published and each topic is settled as `expected` says, and returns the
/// broker's stats with the programs.
async fn run_part(
    walkthrough: &Walkthrough,
    part: &str,
    expected: impl Fn(&Value) -> bool,
) -> (Value, Vec<Running>) {
    let block = &blocks("README.md", part, "sh")[0];
    let mut running = walkthrough.start_block(block).await;
    for miner in running.iter_mut().filter(|r| r.name == "miner") {
        miner.succeeds().await;
    }
    let stats = walkthrough
        .wait_stats(BROKER_PORT, "every job is done", &running, expected)
        .await;
    (stats, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_1_the_multiply_factory_runs_as_written() {
    let walkthrough = Walkthrough::new();
    let (stats, running) = run_part(&walkthrough, "Part 1", |stats| {
        settled(stats, "multiply", JOBS)
    })
    .await;
    assert_eq!(count(&stats, "multiply", "completed"), JOBS, "{stats:#}");
    assert!(
        topic(&stats, "divide").is_none(),
        "Multiply only: {stats:#}"
    );
    let factory = running.iter().find(|r| r.name == "factory").unwrap();
    wait_printed(factory, "a right product for each job", |lines| {
        checked_products(lines) == JOBS as usize
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_2a_divide_runs_as_written_and_a_zero_divisor_fails_once() {
    let walkthrough = Walkthrough::new();
    let (_, running) = run_part(&walkthrough, "Part 2a", |stats| {
        settled(stats, "multiply", JOBS) && settled(stats, "divide", JOBS)
    })
    .await;

    // The second block publishes chosen jobs, a zero divisor among them, and exits.
    let chosen = &blocks("README.md", "Part 2a", "sh")[1];
    for words in commands(chosen) {
        let (status, printed) = walkthrough.run(&words).await;
        assert!(status.success(), "{words:?} ended with {status}");
        assert_eq!(
            printed.len(),
            2,
            "a line for each job published: {printed:?}"
        );
    }
    let stats = walkthrough
        .wait_stats(BROKER_PORT, "the chosen jobs are done", &running, |stats| {
            settled(stats, "divide", JOBS + 2)
        })
        .await;
    assert_eq!(
        (
            count(&stats, "divide", "completed"),
            count(&stats, "divide", "failed")
        ),
        (JOBS + 1, 1),
        "the zero divisor fails once, and only it: {stats:#}"
    );
    wait_printed(&running[0], "the quotient truncated toward zero", |lines| {
        lines.contains(&"Factory.Divide of 7 and -2 is -3".to_owned())
    })
    .await;

    // docs/metrics.md's commands, on this broker.
    let watching = &blocks("docs/metrics.md", "Watching the broker", "sh")[0];
    for words in commands(watching) {
        if words.contains(&"--watch".to_owned()) {
            // Redraws until stopped: its first snapshot is enough.
            let mut watch = walkthrough.start(&words).await;
            let deadline = Instant::now() + WAIT;
            while watch.process.lines().len() < 3 {
                assert!(
                    Instant::now() < deadline && watch.process.has_exited().is_none(),
                    "{words:?} printed no snapshot: {:?}",
                    watch.process.lines()
                );
                tokio::time::sleep(POLL).await;
            }
            continue;
        }
        let (status, printed) = walkthrough.run(&words).await;
        assert!(status.success(), "{words:?} ended with {status}");
        assert!(!printed.is_empty(), "{words:?} printed nothing");
        if words.contains(&"--json".to_owned()) {
            let json: Value = serde_json::from_str(&printed.join("\n")).expect("JSON");
            if words.contains(&"dead-letters".to_owned()) {
                let letters = &json["topics"][0]["letters"];
                assert_eq!(
                    letters[0]["operands"],
                    serde_json::json!([5, 0]),
                    "{json:#}"
                );
                assert_eq!(letters[0]["error_kind"], "divide_by_zero", "{json:#}");
                assert_eq!(letters.as_array().unwrap().len(), 1, "{json:#}");
            } else {
                assert_eq!(count(&json, "divide", "failed"), 1, "{json:#}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_2b_the_pipeline_runs_as_written() {
    let walkthrough = Walkthrough::new();
    let (stats, running) = run_part(&walkthrough, "Part 2b", |stats| {
        let pairs = grouped(&multiplied_by_each(stats), 2);
        settled(stats, "multiply", JOBS) && pairs > 0 && settled(stats, "divide", pairs)
    })
    .await;
    assert_eq!(count(&stats, "divide", "failed"), 0, "{stats:#}");
    assert_eq!(
        running.iter().filter(|r| r.name == "factory").count(),
        2,
        "two factories, each pairing its own results"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_3_triplets_run_as_written() {
    let walkthrough = Walkthrough::new();
    let (stats, running) = run_part(&walkthrough, "Part 3", |stats| {
        settled(stats, "multiply", JOBS) && settled(stats, "divide", JOBS / 3)
    })
    .await;
    assert_eq!(count(&stats, "divide", "failed"), 0, "{stats:#}");
    let factory = running.iter().find(|r| r.name == "factory").unwrap();
    wait_printed(factory, "a right product of three for each job", |lines| {
        let triplets = lines.iter().filter(|line| line.matches(" * ").count() == 2);
        checked_products(lines) == JOBS as usize && triplets.count() == JOBS as usize
    })
    .await;
}

/// A marking report's check lines as (part, passed, check) and its score lines, from the
/// lines `lab mark` printed or a doc quotes.
fn report(lines: &[String]) -> (Vec<(String, bool, String)>, Vec<String>) {
    let mut checks = Vec::new();
    let mut scores = Vec::new();
    for line in lines {
        let Some(rest) = line.strip_prefix("Part ") else {
            if line.starts_with("Total: ") {
                scores.push(line.clone());
            }
            continue;
        };
        let (part, rest) = rest.split_once(' ').expect("Part N ...");
        if part.ends_with(':') {
            scores.push(line.clone());
            continue;
        }
        let rest = rest.trim_start();
        let (passed, rest) = match rest.chars().next() {
            Some('✔') => (true, &rest['✔'.len_utf8()..]),
            Some('✘') => (false, &rest['✘'.len_utf8()..]),
            _ => panic!("a report line without a mark: {line:?}"),
        };
        let check = rest.trim().split(": ").next().unwrap_or_default();
        checks.push((part.to_owned(), passed, check.to_owned()));
    }
    (checks, scores)
}

/// `lab mark`'s score line: passed and total.
fn total(lines: &[String]) -> (u32, u32) {
    let total = lines
        .iter()
        .find_map(|line| line.strip_prefix("Total: "))
        .unwrap_or_else(|| panic!("no total in {lines:?}"));
    let (passed, of) = total.split_once('/').expect("N/M");
    (passed.parse().unwrap(), of.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marking_a_submission_runs_as_written_and_the_example_report_holds() {
    let walkthrough = Walkthrough::new();
    // The block's `./target/debug/` is where `cargo build` put the programs, as `program` does.
    let built = program("factory");
    program_of("system-tests", "bad-factory");
    let target = format!("{}/", built.parent().expect("a folder").display());
    let local = |words: Vec<String>| -> Vec<String> {
        words
            .into_iter()
            .map(|word| word.replace("./target/debug/", &target))
            .collect()
    };

    let block = &blocks("README.md", "Marking a submission", "sh")[0];
    let mut marked = 0;
    for words in commands(block) {
        if words == ["cargo", "build"] {
            continue; // `program` built what the marking runs.
        }
        if words.iter().any(|word| word.contains("../alice/")) {
            continue; // A student's project; `lab_new.rs` marks one with this command.
        }
        let (status, printed) = walkthrough.run(&local(words.clone())).await;
        let (passed, of) = total(&printed);
        assert!(
            status.success() && passed == of && of > 0,
            "{words:?} ended with {status}:\n{}",
            printed.join("\n")
        );
        marked += 1;
    }
    assert_eq!(marked, 1, "the block marks our factory once");

    // The example: a factory that adds, marked on Parts 1 and 2a, with the report the README
    // shows (the ports and times differ from run to run, the checks and scores do not).
    let example = blocks("README.md", "Marking a submission", "text");
    let (words, shown) = prompted(&example[0]);
    let (status, printed) = walkthrough.run(&local(words.clone())).await;
    assert_eq!(
        status.code(),
        Some(1),
        "{words:?}: 1 when some check fails:\n{}",
        printed.join("\n")
    );
    let (shown_checks, shown_scores) = report(&shown);
    assert!(!shown_checks.is_empty() && !shown_scores.is_empty());
    assert_eq!(
        report(&printed),
        (shown_checks, shown_scores),
        "README's example report against this run's:\n{}",
        printed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_labs_programs_run_as_written_and_a_go_submission_is_marked() {
    let block = &blocks("README.md", "Using the Go lab's programs", "sh")[0];
    let go_doc = blocks("docs/go.md", "Using the Go lab's programs", "sh");
    assert_eq!(
        block, &go_doc[0],
        "README and docs/go.md show the same block"
    );

    let walkthrough = Walkthrough::new();
    let mut running = walkthrough.start_block(block).await;
    assert_eq!(
        running.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["broker", "go-factory", "go-miner"]
    );
    running[2].succeeds().await;
    let stats = walkthrough
        .wait_stats(BROKER_PORT, "every job is done", &running, |stats| {
            settled(stats, "multiply", JOBS) && settled(stats, "divide", JOBS / 2)
        })
        .await;
    let subscribers = stats["subscribers"].as_array().unwrap();
    assert!(
        !subscribers.is_empty() && subscribers.iter().all(|s| s["protocol"] == "go-net-rpc"),
        "{stats:#}"
    );
    drop(running);

    // docs/go.md: build the submission, then mark it.
    let marking = &go_doc[1];
    let mut lines = commands(marking).into_iter();
    let build = lines.next().expect("a build line").join(" ");
    assert!(
        build.contains("go build -o factory-bin ./factory"),
        "builds the Go factory: {build}"
    );
    let built = go_program("factory").display().to_string();
    let words: Vec<String> = lines
        .next()
        .expect("a marking line")
        .into_iter()
        .map(|word| word.replace("../alice/factory-bin", &built))
        .collect();
    let (status, printed) = walkthrough.run(&words).await;
    let (passed, of) = total(&printed);
    assert!(
        status.success() && passed == of && of > 0,
        "{words:?} ended with {status}:\n{}",
        printed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_walkthrough_runs_as_written() {
    let block = &blocks("docs/jetstream.md", "Topics shared by brokers", "sh")[0];
    let mut words = commands(block);
    let watch = words
        .pop()
        .expect("the block ends with a command that watches");
    assert!(watch.contains(&"--watch".to_owned()), "{watch:?}");

    let walkthrough = Walkthrough::new();
    let mut running = Vec::new();
    for command in &words {
        let miner = command.join(" ").starts_with("cargo run -p miner");
        if command[0] != "nats-server" && running.iter().all(|r: &Running| r.name == "nats-server")
        {
            // As one would wait for the servers' logs to show a leader before going on: a
            // broker waits for JetStream, but a miner started while its topic's stream is
            // being made on a cluster still forming can give up.
            wait_cluster(&running).await;
        }
        if miner && running.iter().all(|r| r.name != "miner") {
            // Step 4 after step 3: the factories have made the topics and subscribed, as the
            // terminals of step 3 show, so that the miners find their streams made.
            wait_subscribed(&running).await;
        }
        running.push(walkthrough.start(command).await);
    }
    let names: Vec<&str> = running.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "nats-server",
            "nats-server",
            "nats-server",
            "broker",
            "broker",
            "factory",
            "factory",
            "miner",
            "miner"
        ]
    );
    for miner in running.iter_mut().filter(|r| r.name == "miner") {
        miner.succeeds().await;
    }

    // Every job published through either broker is done, and each stream, kept by all three
    // nodes, is empty.
    let brokers: Vec<String> = running
        .iter()
        .filter(|r| r.name == "broker")
        .map(|r| format!("127.0.0.1:{}", r.option("--port").unwrap()))
        .collect();
    let deadline = Instant::now() + WAIT;
    let (first, second) = loop {
        let first = stats_at(&brokers[0]).await;
        let second = stats_at(&brokers[1]).await;
        if let (Some(first), Some(second)) = (first, second) {
            let both = [&first, &second];
            let pairs = grouped(
                &both
                    .iter()
                    .flat_map(|s| multiplied_by_each(s))
                    .collect::<Vec<_>>(),
                2,
            );
            let done = [("multiply", JOBS), ("divide", JOBS + pairs)]
                .into_iter()
                .all(|(name, jobs)| {
                    let completed: u64 = both.iter().map(|s| count(s, name, "completed")).sum();
                    let stream =
                        &topic(&second, name).map_or(Value::Null, |t| t["jetstream"].clone());
                    completed == jobs
                        && stream["last_sequence"] == jobs
                        && stream["messages"] == 0
                        && stream["ack_pending"] == 0
                        && stream["replicas"] == 3
                        && stream["current_replicas"] == 3
                        && !stream["leader"].is_null()
                });
            if done {
                break (first, second);
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting until every job is done; the brokers' stats: \
                 {first:#}\n{second:#}\n{}",
                last_words(&running)
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "the brokers do not answer\n{}",
                last_words(&running)
            );
        }
        tokio::time::sleep(POLL).await;
    };
    for name in ["multiply", "divide"] {
        assert_eq!(
            count(&first, name, "failed") + count(&second, name, "failed"),
            0
        );
    }
    // Jobs cross brokers: some are completed through another broker than the one that took
    // them from the miner or the pipeline (whichever broker each factory settled on).
    let crossed: u64 = [&first, &second]
        .iter()
        .flat_map(|stats| {
            ["multiply", "divide"].map(|name| {
                count(stats, name, "completed").abs_diff(count(stats, name, "published"))
            })
        })
        .sum();
    assert!(
        crossed > 0,
        "every job was done through the broker it was published to: {first:#}\n{second:#}\n{}",
        last_words(&running)
    );

    // Watching: its table names each stream, which all three nodes keep.
    let mut watching = walkthrough.start(&watch).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = watching.process.lines();
        let shown = |stream: &str| {
            lines
                .iter()
                .any(|line| line.contains(stream) && line.contains("3/3"))
        };
        if shown("pairbroker-multiply") && shown("pairbroker-divide") {
            break;
        }
        assert!(
            Instant::now() < deadline && watching.process.has_exited().is_none(),
            "{watch:?} did not show both streams with 3 of 3 replicas: {lines:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}
