//! Crash points for fault-injection tests: a named place in the code where a `souk` process
//! can be made to die, to prove that the work which follows a commit survives a crash there.
//!
//! A point fires when the environment variable `SOUK_CRASH_AT` names it: the process aborts
//! at once (no destructors, no flush, no acknowledgement), as a `kill -9` would leave it. Points
//! are compiled only into debug builds (what `cargo test` runs); in a release build
//! [`crash_point`] is empty and the variable is ignored.
//!
//! Each point sits right after a commit whose follow-up matters and before that follow-up is
//! pushed; `tests/it/seams.rs` kills a process at each and checks the follow-up happened once.

/// Dies here when `SOUK_CRASH_AT` names `name` (debug builds only).
#[inline]
pub fn crash_point(name: &str) {
    #[cfg(debug_assertions)]
    {
        static ARMED: std::sync::LazyLock<Option<String>> =
            std::sync::LazyLock::new(|| std::env::var("SOUK_CRASH_AT").ok().filter(|s| !s.is_empty()));
        if ARMED.as_deref() == Some(name) {
            eprintln!("souk: crash point {name} reached (SOUK_CRASH_AT); aborting");
            std::process::abort();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
