//! Lambda handlers: plain async functions taking their dependencies and the
//! typed event, so tests call them directly. `functions/*/src/main.rs` only
//! wires configuration, clients and these handlers.

pub mod deliver;
pub mod fanout;
pub mod notify;
pub mod publish;
pub mod rank;
pub mod sweeper;
