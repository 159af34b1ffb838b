//! `broker stats` and `broker dead-letters`: what a running broker is doing and which of its
//! jobs failed, as aligned tables for people or as JSON for scripts; `--watch` shows the stats
//! again every second. `/api/dead-letters` serves the JSON of `broker dead-letters --json`, so
//! that the dashboard and the command cannot drift apart.

mod json;
mod tables;
#[cfg(test)]
mod tests;

pub use json::{dead_letters_to_json, to_json};
pub use tables::{format_dead_letters, format_table};

use std::io::{IsTerminal, Write as _};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::Json;
use serde_json::Value;
use stubs::{BrokerClient, BrokerError, BrokerStats};
use transport::{AccessToken, ClientTls, ConnectError};

use crate::requests::BrokerState;
use json::{dead_letters_value, to_json_line};

/// How often `--watch` shows the figures again.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Clears a terminal and puts the cursor home, so that each snapshot replaces the last, as in
/// `top`. Written to terminals only: in a pipe or a file these bytes are garbage.
const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

/// Why `broker stats` or `broker dead-letters` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The broker cannot be reached.
    #[error("{}", lab_console::unreachable_broker(.0))]
    Unreachable(ConnectError),
    /// The broker stopped answering.
    #[error("the broker at {address} did not answer: {error}")]
    NoAnswer {
        /// The broker's address.
        address: String,
        /// What went wrong.
        error: tarpc::client::RpcError,
    },
    /// The broker refused the request, e.g. for a topic it does not have.
    #[error("{0}")]
    Refused(BrokerError),
    /// Standard output failed for another reason than its reader going away.
    #[error("cannot write to standard output: {0}")]
    Output(std::io::Error),
}

/// How `--watch` sets one snapshot apart from the one before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Redraw {
    /// On a terminal: clear it and draw from the top.
    Screen,
    /// Into a pipe or a file: each snapshot after the last, a blank line between (JSON: one
    /// compact object a line), so that `grep`, `head` and `jq` read it as it comes.
    Append,
}

/// Fetches the broker's figures and prints them; with `watch`, again every second until
/// interrupted or until nobody reads standard output any more.
pub async fn show(
    address: &str,
    token: &AccessToken,
    tls: Option<&ClientTls>,
    json: bool,
    watch: bool,
) -> Result<(), StatsError> {
    let client = connect(address, token, tls).await?;
    let redraw = watch.then(|| {
        if std::io::stdout().is_terminal() {
            Redraw::Screen
        } else {
            Redraw::Append
        }
    });
    let mut first = true;
    loop {
        let stats = client
            .stats(tarpc::context::current())
            .await
            .map_err(|error| no_answer(address, error))?;
        let text = snapshot(&stats, json, redraw, first, SystemTime::now());
        if write_out(&text)?.is_break() || !watch {
            return Ok(());
        }
        first = false;
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

/// Fetches the dead letters of `topic`, or of every topic, and prints them.
pub async fn show_dead_letters(
    address: &str,
    token: &AccessToken,
    tls: Option<&ClientTls>,
    topic: Option<&str>,
    json: bool,
) -> Result<(), StatsError> {
    let client = connect(address, token, tls).await?;
    let topics = match topic {
        Some(topic) => vec![topic.to_owned()],
        None => client
            .stats(tarpc::context::current())
            .await
            .map_err(|error| no_answer(address, error))?
            .topics
            .into_iter()
            .map(|topic| topic.name)
            .collect(),
    };
    let mut lists = Vec::with_capacity(topics.len());
    for topic in topics {
        let letters = client
            .dead_letters(tarpc::context::current(), topic.clone())
            .await
            .map_err(|error| no_answer(address, error))?
            .map_err(StatsError::Refused)?;
        lists.push((topic, letters));
    }
    let text = if json {
        dead_letters_to_json(&lists) + "\n"
    } else {
        format_dead_letters(&lists)
    };
    // A reader that left early (`| head`) took what it wanted: a success either way.
    write_out(&text).map(|_| ())
}

/// `/api/dead-letters`: every topic's dead letters, as `broker dead-letters --json` prints them.
pub async fn api_dead_letters(State(broker): State<Arc<BrokerState>>) -> Json<Value> {
    let mut lists = Vec::new();
    for topic in broker.stats().await.topics {
        // A topic cannot disappear, so this only skips a store that fails to answer, as
        // `stats` skips it.
        if let Ok(letters) = broker.dead_letters(&topic.name).await {
            lists.push((topic.name, letters));
        }
    }
    Json(dead_letters_value(&lists))
}

async fn connect(
    address: &str,
    token: &AccessToken,
    tls: Option<&ClientTls>,
) -> Result<BrokerClient, StatsError> {
    transport::connect_broker(address, transport::DEFAULT_CONNECT_TIMEOUT, token, tls)
        .await
        .map_err(StatsError::Unreachable)
}

fn no_answer(address: &str, error: tarpc::client::RpcError) -> StatsError {
    StatsError::NoAnswer {
        address: address.to_owned(),
        error,
    }
}

/// Writes `text` to standard output. Breaks when the reader has gone (a closed pipe, as once
/// `| head -1` has its line): nobody is left to tell, so the program ends quietly, and with
/// success, because the reader got all it asked for.
fn write_out(text: &str) -> Result<ControlFlow<()>, StatsError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(ControlFlow::Continue(())),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(ControlFlow::Break(())),
        Err(error) => Err(StatsError::Output(error)),
    }
}

/// One snapshot as written: alone without `--watch`; with it, set apart from the one before as
/// `redraw` says.
fn snapshot(
    stats: &BrokerStats,
    json: bool,
    redraw: Option<Redraw>,
    first: bool,
    now: SystemTime,
) -> String {
    match (redraw, json) {
        (None, true) => to_json(stats) + "\n",
        (None, false) => format_table(stats, now),
        (Some(Redraw::Screen), true) => format!("{CLEAR_SCREEN}{}\n", to_json(stats)),
        (Some(Redraw::Screen), false) => format!("{CLEAR_SCREEN}{}", format_table(stats, now)),
        (Some(Redraw::Append), true) => to_json_line(stats) + "\n",
        (Some(Redraw::Append), false) if first => format_table(stats, now),
        (Some(Redraw::Append), false) => format!("\n{}", format_table(stats, now)),
    }
}
