//! The binary: parse the command line and hand over to the library, whose `cli::main` runs the
//! command and turns its outcome into the exit code.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    connect_hub::cli::main()
}
