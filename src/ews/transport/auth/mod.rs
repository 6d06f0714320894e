//! Authentication schemes of the transport, and the NTLM acceptor used by the simulator and
//! tests.

pub mod ntlm_server;
