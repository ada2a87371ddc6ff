//! Rayon thread pools, one per requested size, created on first use and kept.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A pool with `n` threads (`n == 0` means one per core).
pub fn pool(n: usize) -> Arc<rayon::ThreadPool> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let n = if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    };
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    pools
        .entry(n)
        .or_insert_with(|| {
            Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("bytepair-{i}"))
                    .build()
                    .expect("thread pool"),
            )
        })
        .clone()
}
