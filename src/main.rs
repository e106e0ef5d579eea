//! The `slcs` binary: parse arguments and hand over to [`slcs::cli`].

/// mimalloc instead of the system allocator: request handling allocates
/// many small short-lived buffers, and glibc malloc showed as ~15 % of the
/// server's CPU under token load (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    slcs::cli::main()
}
