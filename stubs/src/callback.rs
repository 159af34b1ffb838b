//! [`Callback`]: the procedure a subscription calls on its factory, by the names of the
//! contract.

use std::fmt;
use std::sync::Arc;

use crate::{DIVIDE, MULTIPLY};

/// The procedure a subscription calls on its factory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Callback {
    /// `Factory.Multiply`.
    Multiply,
    /// `Factory.Divide`.
    Divide,
    /// Another method of a Go factory, called by its name over net/rpc: a student's own type
    /// and method names, which the broker calls verbatim.
    Named(Arc<str>),
}

impl Callback {
    /// Reads a callback name of the lab (`"Factory.Multiply"` or `"Factory.Divide"`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            MULTIPLY => Some(Callback::Multiply),
            DIVIDE => Some(Callback::Divide),
            _ => None,
        }
    }

    /// A Go factory's method name: the lab's two by their names, any other as it is.
    pub fn from_go_name(name: &str) -> Self {
        Self::from_name(name).unwrap_or_else(|| Callback::Named(Arc::from(name)))
    }

    /// The callback's name, as a factory serves it.
    pub fn name(&self) -> &str {
        match self {
            Callback::Multiply => MULTIPLY,
            Callback::Divide => DIVIDE,
            Callback::Named(name) => name,
        }
    }
}

impl fmt::Display for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_names_round_trip() {
        for callback in [Callback::Multiply, Callback::Divide] {
            assert_eq!(Callback::from_name(callback.name()), Some(callback.clone()));
            assert_eq!(Callback::from_go_name(callback.name()), callback);
        }
        assert_eq!(Callback::from_name("Factory.Add"), None);
        let named = Callback::from_go_name("Worker.Times");
        assert_eq!(named.name(), "Worker.Times");
    }
}
