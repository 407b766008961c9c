//! The connection layer both ports share (DESIGN: "one connection layer"):
//! a stream that is plain TCP or TLS behind one type, the TLS settings, the
//! cluster secret, and the peer handshake, the only way a frame reaches the
//! core.

pub mod handshake;
pub mod ratelimit;
pub mod secret;
pub mod stream;
pub mod sys;
pub mod tls;

pub use secret::Secret;
pub use stream::Stream;
pub use tls::TlsSettings;
