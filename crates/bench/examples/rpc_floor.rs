//! The floor under any per-job RPC design on this machine: one client keeps `--in-flight` calls
//! outstanding to an echo server in another process, over loopback, through the project's
//! framing (length-delimited bincode frames, `transport::framed`), two ways:
//!
//! - `tarpc`: a tarpc service with one method, as the broker and factory use;
//! - `framed`: the same frames with a request id, matched by hand, no RPC layer: the reader
//!   replies to every frame that has arrived, then flushes once.
//!
//! Both ends run on tokio's current-thread runtime and the tarpc server runs a connection's
//! calls side by side in its task, as the broker and factory do.
//!
//! Run: `cargo run --release -p bench --example rpc_floor -- [CALLS] [IN_FLIGHT]`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use stubs::{Job, Pair};
use tarpc::server::{BaseChannel, Channel};
use tokio::net::{TcpListener, TcpStream};

#[tarpc::service]
trait Echo {
    async fn echo(job: Job) -> Job;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: tarpc::context::Context, job: Job) -> Job {
        job
    }
}

type Framed = transport::TcpTransport<(u64, Job), (u64, Job)>;

async fn serve(kind: &str, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        match kind {
            "tarpc" => {
                tokio::spawn(
                    BaseChannel::with_defaults(transport::framed(stream))
                        .execute(EchoServer.serve())
                        .for_each_concurrent(None, |call| call),
                );
            }
            _ => {
                tokio::spawn(async move {
                    let framed: Framed = transport::framed(stream);
                    let (mut sink, stream) = framed.split();
                    // Every frame that has arrived is answered, then one flush sends them all.
                    let mut batches = stream.ready_chunks(1024);
                    while let Some(batch) = batches.next().await {
                        for request in batch {
                            let Ok(request) = request else { return };
                            if sink.feed(request).await.is_err() {
                                return;
                            }
                        }
                        if sink.flush().await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    }
}

async fn drive_tarpc(address: SocketAddr, calls: u64, in_flight: u64) {
    let stream = TcpStream::connect(address).await.unwrap();
    let client =
        EchoClient::new(tarpc::client::Config::default(), transport::framed(stream)).spawn();
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..in_flight {
        let client = client.clone();
        callers.spawn(async move {
            for call in (caller..calls).step_by(in_flight as usize) {
                let job: Job = Pair {
                    x: call as i64,
                    y: 2,
                }
                .into();
                let echoed = client.echo(tarpc::context::current(), job).await.unwrap();
                assert_eq!(echoed, job);
            }
        });
    }
    while callers.join_next().await.is_some() {}
}

/// Call `id` of the hand-made protocol: its id and a job to echo.
fn request(id: u64) -> (u64, Job) {
    (id, Pair { x: id as i64, y: 2 }.into())
}

async fn drive_framed(address: SocketAddr, calls: u64, in_flight: u64) {
    let stream = TcpStream::connect(address).await.unwrap();
    let framed: Framed = transport::framed(stream);
    let (mut sink, mut replies) = framed.split();
    let mut sent = 0u64;
    let mut received = 0u64;
    while sent < in_flight.min(calls) {
        sink.feed(request(sent)).await.unwrap();
        sent += 1;
    }
    sink.flush().await.unwrap();
    let mut batches = (&mut replies).ready_chunks(1024);
    while received < calls {
        let batch = batches.next().await.expect("the server answers every call");
        for reply in batch {
            let (id, job) = reply.unwrap();
            assert_eq!((id, job), request(id));
            received += 1;
            if sent < calls {
                sink.feed(request(sent)).await.unwrap();
                sent += 1;
            }
        }
        sink.flush().await.unwrap();
    }
}

// One thread per process, as the broker, factory and miner run by default.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        serve(&args[2], listener).await;
        return;
    }
    let calls: u64 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(400_000);
    let in_flight: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(32);
    for kind in ["tarpc", "framed"] {
        let mut server = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--serve", kind])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut port = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(server.stdout.as_mut().unwrap()),
            &mut port,
        )
        .unwrap();
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port.trim().parse::<u16>().unwrap()));
        let client_before = bench::machine::usage(std::process::id()).unwrap().cpu_s;
        let started = Instant::now();
        match kind {
            "tarpc" => drive_tarpc(address, calls, in_flight).await,
            _ => drive_framed(address, calls, in_flight).await,
        }
        let elapsed = started.elapsed().as_secs_f64();
        let client_cpu = bench::machine::usage(std::process::id()).unwrap().cpu_s - client_before;
        let server_cpu = bench::machine::usage(server.id()).unwrap().cpu_s;
        let _ = server.kill();
        let _ = server.wait();
        println!(
            "{kind:<6} {calls} calls, {in_flight} in flight: {:>9.0} calls/s, CPU per call: client {:.1} µs, server {:.1} µs",
            calls as f64 / elapsed,
            client_cpu / calls as f64 * 1e6,
            server_cpu / calls as f64 * 1e6,
        );
    }
}
