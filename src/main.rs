//! The `slcs` binary: parse arguments and hand over to [`slcs::cli`].

fn main() -> std::process::ExitCode {
    slcs::cli::main()
}
