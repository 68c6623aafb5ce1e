//! `minder`: the command line for minderd.

fn main() -> std::process::ExitCode {
    minder_cli::main()
}
