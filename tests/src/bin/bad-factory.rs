//! A factory that is wrong on purpose, one way per `--mode`, for the tests of `lab mark`: each
//! mode is a kind of submission a marker receives.
//!
//! `bad-factory --mode MODE --port PORT --broker ADDR`, with MODE one of:
//! - `add`: Multiply answers x + y;
//! - `exit`: exits at once with status 3;
//! - `silent`: serves, but never subscribes;
//! - `wrong-callback`: subscribes with `Factory.Mul`;
//! - `wrong-address`: subscribes with an address nothing serves;
//! - `abort-on-zero`: right, but a zero divisor ends the process, as a Go factory's panic does;
//! - `panic`: every call panics in its handler;
//! - `spin`: every call loops for ever;
//! - `stop`: stops itself with SIGSTOP once subscribed;
//! - `flood`: right, but publishes to `multiply` as fast as the broker takes it.

use std::time::Duration;

use futures::StreamExt;
use stubs::{
    BrokerClient, ChannelRequest, Factory, Job, JobError, JobReport, Pair, PublishRequest,
    Subscription,
};
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use transport::{AccessToken, Admission};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Add,
    Exit,
    Silent,
    WrongCallback,
    WrongAddress,
    AbortOnZero,
    Panic,
    Spin,
    Stop,
    Flood,
}

impl Mode {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "add" => Mode::Add,
            "exit" => Mode::Exit,
            "silent" => Mode::Silent,
            "wrong-callback" => Mode::WrongCallback,
            "wrong-address" => Mode::WrongAddress,
            "abort-on-zero" => Mode::AbortOnZero,
            "panic" => Mode::Panic,
            "spin" => Mode::Spin,
            "stop" => Mode::Stop,
            "flood" => Mode::Flood,
            _ => return None,
        })
    }
}

#[derive(Clone)]
struct BadFactory(Mode);

impl BadFactory {
    fn answer(&self, job: Job, multiply: bool) -> Result<JobReport, JobError> {
        match self.0 {
            Mode::Panic => panic!("a handler that panics"),
            Mode::Spin =>
            {
                #[allow(clippy::empty_loop)]
                loop {}
            }
            Mode::Add if multiply => {
                let Job::Pair(Pair { x, y }) = job else {
                    return Err(JobError::Overflow);
                };
                return Ok(JobReport { result: x + y });
            }
            Mode::AbortOnZero if !multiply => {
                if let Job::Pair(Pair { y: 0, .. }) = job {
                    eprintln!("panic: runtime error: integer divide by zero");
                    std::process::abort();
                }
            }
            _ => {}
        }
        let result = if multiply {
            factory::arithmetic::multiply(job)
        } else {
            factory::arithmetic::divide(job)
        };
        result.map(|result| JobReport { result })
    }
}

impl Factory for BadFactory {
    async fn multiply(self, _: Context, job: Job) -> Result<JobReport, JobError> {
        self.answer(job, true)
    }
    async fn divide(self, _: Context, job: Job) -> Result<JobReport, JobError> {
        self.answer(job, false)
    }
    async fn multiply_batch(self, _: Context, jobs: Vec<Job>) -> Vec<Result<JobReport, JobError>> {
        jobs.into_iter().map(|job| self.answer(job, true)).collect()
    }
    async fn divide_batch(self, _: Context, jobs: Vec<Job>) -> Vec<Result<JobReport, JobError>> {
        jobs.into_iter()
            .map(|job| self.answer(job, false))
            .collect()
    }
}

fn option(name: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == name)
        .and_then(|at| args.get(at + 1))
        .cloned()
        .unwrap_or_else(|| {
            eprintln!("bad-factory: {name} is required");
            std::process::exit(2)
        })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(mode) = Mode::parse(&option("--mode")) else {
        eprintln!("bad-factory: unknown --mode");
        std::process::exit(2)
    };
    if mode == Mode::Exit {
        eprintln!("bad-factory: exiting at once, as a submission that does not start");
        std::process::exit(3);
    }
    let port = option("--port");
    let broker_address = option("--broker");
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("bind the factory's port");
    let service = BadFactory(mode);
    tokio::spawn(transport::accept(
        listener,
        Admission::default(),
        CancellationToken::new(),
        TaskTracker::new(),
        move |stream, _| {
            let service = service.clone();
            async move {
                BaseChannel::with_defaults(transport::framed(stream))
                    .execute(service.serve())
                    .for_each_concurrent(None, |call| call)
                    .await;
            }
        },
    ));
    let broker = transport::connect_broker(
        &broker_address,
        Duration::from_secs(5),
        &AccessToken::default(),
        None,
    )
    .await
    .expect("connect to the broker");
    if mode != Mode::Silent {
        let (address, callback) = match mode {
            Mode::WrongAddress => ("127.0.0.1:1".to_owned(), stubs::MULTIPLY),
            Mode::WrongCallback => (format!("127.0.0.1:{port}"), "Factory.Mul"),
            _ => (format!("127.0.0.1:{port}"), stubs::MULTIPLY),
        };
        subscribe(&broker, stubs::MULTIPLY_TOPIC, &address, callback).await;
        subscribe(&broker, stubs::DIVIDE_TOPIC, &address, stubs::DIVIDE).await;
    }
    match mode {
        Mode::Stop => {
            // SAFETY: raise(3) sends a signal to this process; it touches no memory.
            unsafe {
                libc::raise(libc::SIGSTOP);
            }
        }
        Mode::Flood => loop {
            let request = PublishRequest {
                topic: stubs::MULTIPLY_TOPIC.to_owned(),
                job: Pair { x: 1, y: 1 }.into(),
            };
            if broker
                .publish(tarpc::context::current(), request)
                .await
                .is_err()
            {
                break;
            }
        },
        _ => {}
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn subscribe(broker: &BrokerClient, topic: &str, address: &str, callback: &str) {
    let channel = ChannelRequest {
        topic: topic.to_owned(),
        buffer: 10,
    };
    let _ = broker
        .create_channel(tarpc::context::current(), channel)
        .await;
    let subscription = Subscription {
        topic: topic.to_owned(),
        factory_address: address.to_owned(),
        callback: callback.to_owned(),
        prefetch: 1,
    };
    let answer = broker
        .subscribe(tarpc::context::current(), subscription)
        .await;
    eprintln!("bad-factory: subscribe to {topic} with {callback}: {answer:?}");
}
