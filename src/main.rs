//! CLI entry: parses the command line and hands off to `hawzu_gate::cli`.

/// The allocator is the binary's choice: mimalloc unless built with
/// `--no-default-features` (docs/performance.md: memory per cached token
/// and the request path, measured both ways).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hawzu_gate::cli::main()
}
