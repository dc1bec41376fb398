//! Fault injection and stand-ins for what cannot be reached from a test
//! machine. `sim` is the LLM provider simulator: it speaks the providers'
//! public wire formats so that a cell pointed at it behaves exactly as when
//! pointed at the real cloud.

pub mod sim;
