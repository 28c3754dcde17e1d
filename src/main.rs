fn main() -> std::process::ExitCode {
    keep_freed_memory();
    repro::cli::main()
}

/// The encoder allocates and frees tensors of tens of megabytes per layer. glibc serves
/// those with fresh `mmap`s and returns them on `free`, so every layer pays page faults and
/// zeroing of new pages (measured: a fifth of the encode time). Keeping freed memory in the
/// heap makes the next layer reuse it.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
