//! Logs on standard error, as sentences a person reads: one event per line, no module paths
//! unless asked for, and durations rounded to what a person can take in.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Span, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per event, with its fields, for log collectors.
    Json,
}

/// What starts each line of text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LineStart {
    /// The time and the level, for a program on its own: `2026-01-01T10:00:00.000000Z  INFO`.
    #[default]
    Stamped,
    /// The component's name and a bar, as the one-process lab prints its result lines
    /// (`broker   | `), and the level only when it is a warning or an error. The name is that
    /// of the [`component`] span the event happened in, or else its crate's.
    Component,
}

/// What is logged when `RUST_LOG` is not set: our `info` events, and nothing of tarpc's.
/// Every failure tarpc meets reaches our code, which logs it in our words; tarpc's own lines
/// (`RpcError::Channel`) would say it a second time in its. And tarpc opens an `info` span for
/// every call on both ends, whose fields the text formatter renders at once: about a tenth of
/// the broker's CPU time under load, for lines that are never printed.
pub const DEFAULT_LOG_FILTER: &str = "info,tarpc=off";

/// Sends logs to standard error in `format`, filtered by `RUST_LOG` (default
/// [`DEFAULT_LOG_FILTER`]).
pub fn init_logging(format: LogFormat) {
    init_logging_with(format, DEFAULT_LOG_FILTER, LineStart::Stamped);
}

/// [`init_logging`] with another filter when `RUST_LOG` is not set, and lines that start with
/// `start`. Module paths are shown only when `RUST_LOG` is set: whoever sets it is looking
/// inside, and a module path is noise to everybody else.
pub fn init_logging_with(format: LogFormat, default_filter: &str, start: LineStart) {
    let asked = std::env::var_os("RUST_LOG").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt::layer()
        // Colours for a person at a terminal; none in a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(ComponentNames);
    match format {
        LogFormat::Text => registry
            .with(logs.event_format(Lines {
                start,
                module: asked,
            }))
            .init(),
        LogFormat::Json => registry.with(logs.json()).init(),
    }
}

/// A span naming the component whose work runs in it, e.g. `factory1`, for the lab's lines.
pub fn component(name: &str) -> Span {
    tracing::info_span!(COMPONENT_SPAN, name)
}

/// The name of [`component`] spans.
const COMPONENT_SPAN: &str = "component";

/// A component span's name, kept with the span for the formatter.
struct ComponentName(String);

/// Keeps the name of each [`component`] span where [`Lines`] finds it.
struct ComponentNames;

impl<S> Layer<S> for ComponentNames
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        if attributes.metadata().name() != COMPONENT_SPAN {
            return;
        }
        let mut name = NameField(None);
        attributes.record(&mut name);
        if let (Some(name), Some(span)) = (name.0, context.span(id)) {
            span.extensions_mut().insert(ComponentName(name));
        }
    }
}

/// Reads the `name` field of a span.
struct NameField(Option<String>);

impl Visit for NameField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "name" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "name" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// The text format: the line's start, the message, then any fields as `name=value`.
struct Lines {
    start: LineStart,
    module: bool,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let level = *metadata.level();
        let (colour, reset) = match (writer.has_ansi_escapes(), level) {
            (true, Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
            (true, Level::WARN) => ("\x1b[33m", "\x1b[0m"),
            _ => ("", ""),
        };
        match self.start {
            LineStart::Stamped => {
                SystemTime.format_time(&mut writer)?;
                write!(writer, " {colour}{level:>5}{reset} ")?;
            }
            LineStart::Component => {
                let named = context.event_scope().and_then(|scope| {
                    scope.into_iter().find_map(|span| {
                        let extensions = span.extensions();
                        extensions.get::<ComponentName>().map(|name| name.0.clone())
                    })
                });
                let name = named.unwrap_or_else(|| crate_component(metadata.target()).to_owned());
                write!(writer, "{name:<9}| ")?;
                match level {
                    Level::ERROR => write!(writer, "{colour}error:{reset} ")?,
                    Level::WARN => write!(writer, "{colour}warning:{reset} ")?,
                    _ => {}
                }
            }
        }
        if self.module {
            write!(writer, "{}: ", metadata.target())?;
        }
        context
            .field_format()
            .format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The lab component an event's module belongs to: its crate, by the name the lab prints.
fn crate_component(target: &str) -> &str {
    match target.split("::").next().unwrap_or(target) {
        "broker" => "broker",
        "factory" => "factory",
        "miner" => "miner",
        "transport" => "network",
        _ => "lab",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_crate_is_named_as_the_lab_names_its_component() {
        assert_eq!(crate_component("broker::requests"), "broker");
        assert_eq!(crate_component("factory::membership"), "factory");
        assert_eq!(crate_component("miner"), "miner");
        assert_eq!(crate_component("transport::link"), "network");
        assert_eq!(crate_component("lab_console"), "lab");
        assert_eq!(crate_component("lab::cli"), "lab");
    }
}
