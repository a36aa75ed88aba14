//! On stdio, stdout carries the protocol and nothing else: one stray line (a C library's
//! `printf`, a dependency's `println!`) corrupts the JSON-RPC stream and the client drops
//! the session. [`reserve_stdout`] keeps a private duplicate of stdout for the MCP transport
//! and points file descriptor 1 at stderr, so whatever else writes to "stdout" lands in the
//! log instead.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

/// The real stdout, once reserved; taken by the transport.
static PROTOCOL_OUT: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Keeps the current stdout for the protocol and sends everything else written to file
/// descriptor 1 to stderr. Call once, before anything else starts writing.
pub fn reserve_stdout() -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.flush()?;
    let protocol = stdout.as_fd().try_clone_to_owned()?; // close-on-exec duplicate
    rustix::stdio::dup2_stdout(std::io::stderr().as_fd())?;
    *PROTOCOL_OUT.lock().unwrap_or_else(|e| e.into_inner()) = Some(protocol);
    Ok(())
}

/// The transport's output: the reserved stdout, or plain stdout if none was reserved.
pub(super) fn protocol_out() -> Box<dyn tokio::io::AsyncWrite + Send + Unpin> {
    match PROTOCOL_OUT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        Some(fd) => Box::new(tokio::fs::File::from_std(std::fs::File::from(fd))),
        None => Box::new(tokio::io::stdout()),
    }
}
