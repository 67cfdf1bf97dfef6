//! The migrations are compiled into the binary (`sqlx::migrate!`), which on stable Rust cannot
//! tell cargo to watch them: without this, a migration added to `migrations/` is left out of
//! the next build, and `souk migrate` would not know it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
