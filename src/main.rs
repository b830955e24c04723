//! The `redis-ferry` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    redis_ferry::cli::main()
}
