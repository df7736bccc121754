//! CLI entry: parses the command line and hands off to `hawzu_gate::cli`.

fn main() -> std::process::ExitCode {
    hawzu_gate::cli::main()
}
