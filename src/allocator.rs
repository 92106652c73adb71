//! The binary's memory allocator settings (glibc on Linux): two malloc
//! arenas and a fixed 1 MiB mmap threshold, so the large buffers of a batch
//! (raw messages, decoded columns, output rows, COPY chunks), allocated and
//! freed once per batch from several threads, go back to the system when
//! freed instead of staying in the process. The settings apply only where
//! the user has not set glibc's own environment variables
//! (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`), which keep working as
//! documented. The library leaves the allocator alone.
//!
//! Why these values: with glibc's defaults each thread may get its own arena
//! and the mmap threshold grows after the first large free, so freed batches
//! stay in the process (heaptrack: the heap peaked at about 100 MiB in a run
//! whose RSS peaked near 200 MiB). Two arenas and the fixed threshold
//! measured, with 1M cached subscribers and batches of 1k / 10k / 100k
//! campaigns, 123 / 135 / 203 MiB against 137 / 152 / 245 MiB without them,
//! one run each, back to back (`bench_e2e --scenarios memory`): about 10-17%
//! less. One arena (`MALLOC_ARENA_MAX=1`), once batches were decoded and
//! written chunk by chunk: 100-105 / 116-118 / 139-141 MiB against 103-106 /
//! 121-122 / 145-149 MiB with two (three runs each), but consecutive
//! 1k-campaign batches ran at 205-220k rows/s against 231-236k with two (two
//! runs each): the default stays two; the docs name the setting for a
//! tighter budget (`docs/limits.md`).

/// Arenas: one per core of the machine the project targets.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: i32 = 2;
/// Allocations of this size and more are mapped and unmapped directly.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Applies the settings; call first thing in `main`, before any thread.
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (env, param, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, ARENAS),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mallopt only sets allocator parameters; no thread has
            // started yet, and glibc accepts these values.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}
