//! pairbroker's benchmark runner: the real `broker`, `factory` and `miner` programs started
//! as separate processes on loopback, driven through the suite's workloads, timed by the broker's
//! own counters, and reported as one line per workload plus SVG charts.
//!
//! - [`machine`]: CPU time and memory of processes, and how busy the machine is, from `/proc`.
//! - [`processes`]: building and starting the programs, and reaching a broker once it listens.
//! - [`go`]: the Go lab's own miner and factory, built from `tests/go`, and their flags.
//! - [`workloads`]: one run of a flow of jobs, and its figures.
//! - [`metrics`]: the broker's latency histogram, read from its `/metrics`.
//! - [`suite`]: the workloads W1, W2, W3, M and S (and W1go, W2go: W1 and W2 with the Go lab's
//!   miner and factories), repeated and reduced to medians.
//! - [`charts`]: the S curve and W3's latency histogram as SVG.
//! - [`cli`]: the `bench` program's command line and report.
//! - [`attacker`]: connections that hold the broker's resources and do no work, for the soak.
//! - [`soak`]: `bench soak`, minutes of steady load through faults and an attacker.

pub mod attacker;
pub mod charts;
pub mod cli;
pub mod direct;
pub mod go;
pub mod machine;
pub mod metrics;
pub mod processes;
pub mod soak;
pub mod suite;
pub mod workloads;
