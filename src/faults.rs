//! Crash points for fault-injection tests: a named place in the code where a `souk` process
//! can be made to die, or to freeze, to prove that the work which follows a commit survives a
//! crash there and that a paused process cannot commit stale work when it wakes.
//!
//! A point fires when an environment variable names it:
//! - `SOUK_CRASH_AT=<point>`: the process aborts at once (no destructors, no flush, no
//!   acknowledgement), as a `kill -9` would leave it;
//! - `SOUK_STALL_AT=<point>`: the process stops itself with SIGSTOP the first time it gets there,
//!   as a long GC pause or a frozen VM would; the test resumes it with SIGCONT.
//!
//! Points are compiled only into debug builds (what `cargo test` runs); in a release build
//! [`crash_point`] is empty and the variables are ignored. `tests/it/seams.rs` uses them.

/// Dies (or freezes) here when `SOUK_CRASH_AT` (or `SOUK_STALL_AT`) names `name`; debug builds
/// only.
#[inline]
pub fn crash_point(name: &str) {
    #[cfg(debug_assertions)]
    {
        use std::sync::{
            atomic::{AtomicBool, Ordering},
            LazyLock,
        };
        fn armed(var: &str) -> Option<String> {
            std::env::var(var).ok().filter(|s| !s.is_empty())
        }
        static CRASH: LazyLock<Option<String>> = LazyLock::new(|| armed("SOUK_CRASH_AT"));
        static STALL: LazyLock<Option<String>> = LazyLock::new(|| armed("SOUK_STALL_AT"));
        static STALLED: AtomicBool = AtomicBool::new(false);
        if CRASH.as_deref() == Some(name) {
            eprintln!("souk: crash point {name} reached (SOUK_CRASH_AT); aborting");
            std::process::abort();
        }
        if STALL.as_deref() == Some(name) && !STALLED.swap(true, Ordering::SeqCst) {
            eprintln!("souk: stall point {name} reached (SOUK_STALL_AT); stopping");
            let _ = std::process::Command::new("kill")
                .arg("-STOP")
                .arg(std::process::id().to_string())
                .status();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
