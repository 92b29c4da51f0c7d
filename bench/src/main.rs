//! `ldlm-bench`: load generator and correctness checker for LDLM servers. All logic lives in
//! the library (`ldlm_bench`).

// mimalloc: the client allocates per request (messages, keys); keep that cheap so the client is
// not the bottleneck.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ldlm_bench::main()
}
