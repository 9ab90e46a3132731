//! The `offsite` command: parses the command line and hands it to [`cli`],
//! which calls the library and renders what it returns.

mod cli;

use clap::Parser;

/// Makes glibc give large buffers back to the system when they are freed.
///
/// Uploads read each part into a buffer of `part_size` (16 MiB by default).
/// glibc serves such a buffer with mmap, but after the first one is freed it
/// raises its mmap threshold above it, and later parts come from the heaps
/// of whichever threads touch them, where freed memory stays: peak memory
/// then crept past part_size × concurrency run after run. A fixed threshold
/// keeps every buffer of 1 MiB or more in its own mapping, unmapped on free.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) only changes a malloc tunable; called first thing,
    // before any other thread exists. A failure leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() {
    return_large_buffers_to_the_system();
    let cli = match cli::args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 2,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("offsite: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(cli::run(cli));
    std::process::exit(code);
}
