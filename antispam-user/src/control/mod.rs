//! The control channel: a Unix socket on which operators' commands reach the running agent.
//! `protocol` and `status` are the types both ends share; `server` is the agent's end,
//! `client` the commands'.

pub mod client;
pub mod protocol;
pub mod server;
pub mod signed;
pub mod signers;
pub mod status;

pub use protocol::{Data, Peer, Person, Reply, Request, Response, Target};
