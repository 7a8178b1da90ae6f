//! `--debug`: what the command line decides and reuses (the project's
//! format, the folders, the SDK, each cache hit), said as it goes on the
//! progress stream, each line starting `debug: `. Off unless enabled.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);

/// Turns the debug lines on for the rest of the process.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether debug lines are on.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Writes `debug: <line>` to `progress` when debug lines are on (the line
/// is not even made otherwise). A failed write is ignored, as progress is.
pub fn say(progress: &mut dyn Write, line: impl FnOnce() -> String) {
    if on() {
        let _ = writeln!(progress, "debug: {}", line());
    }
}
