//! The `sluice` command line as a binary of the tests' own package, so
//! integration tests can start it as a real process (and SIGKILL it):
//! cargo only tells a package's tests where that package's binaries are.

fn main() {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(sluice::cli::run(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    ));
    std::process::exit(code);
}
