fn main() -> std::process::ExitCode {
    #[cfg(feature = "openblas")]
    use_fast_openblas_kernels();
    keep_freed_memory();
    repro::cli::main()
}

/// OpenBLAS chooses its kernels when it is loaded, before `main`, from the CPU model or
/// `OPENBLAS_CORETYPE`. When it chose SSE3 kernels on a CPU with AVX2 or AVX-512 (a model
/// it does not know), run this program again with the right `OPENBLAS_CORETYPE`; workers
/// inherit it. A user's own `OPENBLAS_CORETYPE` is left alone.
#[cfg(feature = "openblas")]
fn use_fast_openblas_kernels() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
        return;
    }
    let Some(core) = repro::model::openblas_core_upgrade() else {
        return;
    };
    let Ok(program) = std::env::current_exe() else {
        return;
    };
    // `exec` only returns on failure; then run on with the slow kernels.
    let _ = std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .env("OPENBLAS_CORETYPE", core)
        .exec();
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
