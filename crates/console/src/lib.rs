//! Where the lab programs print what they do: one line per completed job, operation or
//! published job, on standard output, so that logs (standard error) and results stay apart.
//!
//! A [`Console`] may carry a prefix naming its component, so that the one-process lab
//! (`cargo run -p lab`) can interleave the broker's, the factories' and the miner's lines and
//! still show who said what.

use std::fmt;
use std::io::Write;
use std::sync::Arc;

/// A line printer for one component.
#[derive(Clone, Debug, Default)]
pub struct Console {
    prefix: Option<Arc<str>>,
    quiet: bool,
}

impl Console {
    /// Prints lines as they are.
    pub fn plain() -> Self {
        Self::default()
    }

    /// Prints each line after `prefix` and a bar, e.g. `broker    | ...`.
    pub fn prefixed(prefix: &str) -> Self {
        Self {
            prefix: Some(Arc::from(format!("{prefix:<9}| "))),
            quiet: false,
        }
    }

    /// Prints nothing: for tests and for load, where a line per job is noise.
    pub fn quiet() -> Self {
        Self {
            prefix: None,
            quiet: true,
        }
    }

    /// Prints one line. A closed or failing stdout is ignored rather than fatal: losing a
    /// result line must never stop a component from serving.
    pub fn line(&self, line: fmt::Arguments<'_>) {
        if self.quiet {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = match &self.prefix {
            Some(prefix) => writeln!(out, "{prefix}{line}"),
            None => writeln!(out, "{line}"),
        };
    }
}
