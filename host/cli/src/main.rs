/// jemalloc, not the C library's allocator: batches of records allocate
/// and free many kilobyte-sized values on several threads, and the store's
/// node versions are freed on whichever thread collects them; glibc's
/// allocator spent a fifth of a batchSave's CPU consolidating its heap
/// (the README's benchmark notes).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
