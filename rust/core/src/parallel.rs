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

/// `items.iter().map(f).collect()` on `pool`, with the calling thread working too.
///
/// Why not `pool.install(|| par_iter ...)`: that parks the caller while the pool's threads wake
/// up, which costs as much as the work for the small batches (tens of documents) that serving
/// code sends. Here the caller and `threads - 1` pool tasks pull blocks of items from one atomic
/// counter, so a batch is spread as soon as anyone is free. Results keep the input order; the
/// error of the earliest failing item is returned.
pub fn map_ordered<I: Sync, T: Send>(
    pool: &rayon::ThreadPool,
    items: &[I],
    f: impl Fn(&I) -> crate::Result<T> + Sync,
) -> crate::Result<Vec<T>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = items.len();
    let threads = pool.current_num_threads().min(n);
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let block = (n / (threads * 16)).clamp(1, 64);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done: Vec<(usize, crate::Result<T>)> = Vec::new();
        loop {
            let start = next.fetch_add(block, Ordering::Relaxed);
            if start >= n {
                return done;
            }
            for (k, item) in items[start..(start + block).min(n)].iter().enumerate() {
                done.push((start + k, f(item)));
            }
        }
    };
    let mut parts: Vec<Vec<(usize, crate::Result<T>)>> = (0..threads).map(|_| Vec::new()).collect();
    let (mine, others) = parts.split_first_mut().expect("threads >= 2");
    pool.in_place_scope(|s| {
        for slot in others.iter_mut() {
            let work = &work;
            s.spawn(move |_| *slot = work());
        }
        *mine = work();
    });
    let mut slots: Vec<Option<crate::Result<T>>> = (0..n).map(|_| None).collect();
    for (i, r) in parts.into_iter().flatten() {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .map(|r| r.expect("every item was processed"))
        .collect()
}
