//! Rayon thread pools, one per requested size, created on first use and kept.
use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

type Pools = Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>;

/// The pools, made on first use; null again in a forked child (see [`pool`]).
static POOLS: AtomicPtr<Pools> = AtomicPtr::new(std::ptr::null_mut());

/// In a forked child: forget the parent's pools (their threads, and whoever held their lock, did
/// not come along). Only an atomic store, as a fork handler must be.
#[cfg(unix)]
extern "C" fn after_fork_in_child() {
    POOLS.store(std::ptr::null_mut(), Ordering::SeqCst);
}

/// The live pools of this process.
fn pools() -> &'static Pools {
    let p = POOLS.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: a published map is never freed.
        return unsafe { &*p };
    }
    #[cfg(unix)]
    {
        static HANDLER: std::sync::Once = std::sync::Once::new();
        // SAFETY: the handler only stores a null pointer.
        HANDLER.call_once(|| unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        });
    }
    let fresh = Box::into_raw(Box::default());
    match POOLS.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // SAFETY: published just now, and never freed.
        Ok(_) => unsafe { &*fresh },
        Err(won) => {
            // SAFETY: `fresh` was never published.
            drop(unsafe { Box::from_raw(fresh) });
            // SAFETY: as above.
            unsafe { &*won }
        }
    }
}

/// How many cores this process may use (affinity and cgroup quota), as the standard library
/// counts them, looked up again at most once a second.
///
/// Why cached: `available_parallelism` reads the cgroup files on every call, about 25 us, which
/// was nearly all of a batch call on a few short texts.
pub fn usable_cores() -> usize {
    use std::sync::atomic::AtomicU64;
    use std::time::{SystemTime, UNIX_EPOCH};
    // `checked-at milliseconds << 16 | cores`, 0 before the first look; an atomic, not a lock, so
    // that a fork at any moment leaves the child nothing to wait for.
    static CORES: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let c = CORES.load(Ordering::Relaxed);
    if c != 0 && now.wrapping_sub(c >> 16) < 1000 {
        return (c & 0xffff) as usize;
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(0xffff));
    CORES.store(now << 16 | n as u64, Ordering::Relaxed);
    n
}

/// Sends `item` on `tx`, waiting up to `wait` while the channel is full: `Ok` once sent,
/// `Err(Full(item))` when still full after `wait` (the caller looks for Ctrl-C and tries
/// again), `Err(Disconnected(item))` when the receiver is gone.
///
/// Why not `send`: a producer blocked in `send` behind a consumer busy with one long document
/// could not notice Ctrl-C until that document was done.
fn send_within<T>(
    tx: &std::sync::mpsc::SyncSender<T>,
    mut item: T,
    wait: std::time::Duration,
) -> std::result::Result<(), std::sync::mpsc::TrySendError<T>> {
    use std::sync::mpsc::TrySendError;
    let until = std::time::Instant::now() + wait;
    let mut nap = Backoff::new();
    loop {
        match tx.try_send(item) {
            Err(TrySendError::Full(back)) if std::time::Instant::now() < until => item = back,
            r => return r,
        }
        // The consumer takes a batch in tens of milliseconds, and the queue holds the next one
        // meanwhile: a slot filled a few milliseconds late costs nothing, while waking up every
        // few microseconds takes a core's time slices from the threads doing the work.
        nap.sleep(until);
    }
}

/// Sleeps growing from 50 us to 2 ms (never past a deadline), for the waits that poll.
struct Backoff(std::time::Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(std::time::Duration::from_micros(50))
    }

    fn sleep(&mut self, until: std::time::Instant) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        std::thread::sleep(self.0.min(left));
        self.0 = (self.0 * 2).min(std::time::Duration::from_millis(2));
    }
}

/// Waits up to `wait` for `thread` to finish; whether it has.
fn finished_within<T>(
    thread: &std::thread::ScopedJoinHandle<'_, T>,
    wait: std::time::Duration,
) -> bool {
    let until = std::time::Instant::now() + wait;
    let mut nap = Backoff::new();
    while !thread.is_finished() {
        if std::time::Instant::now() >= until {
            return false;
        }
        nap.sleep(until);
    }
    true
}

/// Runs a bounded wait: directly, or (in the Python bindings) with the interpreter detached so
/// that other Python threads run meanwhile.
pub type Wait<'a> = &'a dyn Fn(&mut (dyn FnMut() + Send));

/// The producing side of [`pipeline`].
pub struct Feed<'a, T, E> {
    tx: std::sync::mpsc::SyncSender<T>,
    check: &'a mut dyn FnMut() -> std::result::Result<(), E>,
    wait: Wait<'a>,
}

impl<T: Send, E> Feed<'_, T, E> {
    /// Queues `item` for the consumer (which holds at most one more). While the queue stays full
    /// it runs the pipeline's `check` every [`interrupt::INTERVAL`], so that Ctrl-C is seen during
    /// a long document. `Ok(false)`: the consumer has stopped on an error, which [`pipeline`]
    /// returns; stop producing.
    pub fn send(&mut self, item: T) -> std::result::Result<bool, E> {
        use std::sync::mpsc::TrySendError;
        let mut slot = Some(item);
        loop {
            let mut sent = None;
            let tx = &self.tx;
            let item = &mut slot;
            (self.wait)(&mut || {
                let item = item.take().expect("an item to send");
                sent = Some(send_within(tx, item, interrupt::INTERVAL));
            });
            match sent.expect("the wait ran its closure") {
                Ok(()) => return Ok(true),
                Err(TrySendError::Disconnected(_)) => return Ok(false),
                Err(TrySendError::Full(back)) => slot = Some(back),
            }
            (self.check)()?;
        }
    }

    /// Runs the pipeline's `check` (progress, Ctrl-C) from the producer.
    pub fn check(&mut self) -> std::result::Result<(), E> {
        (self.check)()
    }
}

/// A producer on this thread feeding `consume` on a helper thread through a queue of one item,
/// so that reading the next batch overlaps counting the last one.
///
/// `check` looks for Ctrl-C (and may report progress): [`Feed::send`] runs it while the queue is
/// full, and the end runs it while the consumer finishes its last items. When the producer or
/// `check` fails, the consumer is stopped within its current work (through its
/// [`interrupt`] poll) and its result is dropped: `Err` is the producer's error, which wins over
/// the `Interrupted` it caused. Otherwise `Ok` holds the consumer's result. A panic in the
/// consumer resumes on this thread.
pub fn pipeline<T: Send, E>(
    consume: impl FnOnce(std::sync::mpsc::Receiver<T>) -> crate::Result<()> + Send,
    produce: impl FnOnce(&mut Feed<'_, T, E>) -> std::result::Result<(), E>,
    check: &mut dyn FnMut() -> std::result::Result<(), E>,
    wait: Wait<'_>,
) -> std::result::Result<crate::Result<()>, E> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<T>(1);
        let stop = &stop;
        let consumer = s.spawn(move || {
            let stopped = || stop.load(Ordering::Relaxed);
            interrupt::with_poll(&stopped, || consume(rx)).0
        });
        let mut feed = Feed { tx, check, wait };
        let mut produced = produce(&mut feed);
        let Feed { tx, check, wait } = feed;
        drop(tx);
        // The last items may hold a long document: keep looking for Ctrl-C meanwhile.
        while produced.is_ok() {
            let mut finished = false;
            wait(&mut || finished = finished_within(&consumer, interrupt::INTERVAL));
            if finished {
                break;
            }
            produced = check();
        }
        if produced.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let mut handle = Some(consumer);
        let mut joined = None;
        wait(&mut || joined = handle.take().map(|h| h.join()));
        let consumed = joined
            .expect("the wait ran its closure")
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        produced.map(|()| consumed)
    })
}

/// Runs `produce` on a thread of its own, which hands what it makes to the returned receiver
/// (at most `ahead` items wait there); `produce`'s `send` says `false` once the receiver is gone.
///
/// Why not a scoped thread: a read from a pipe whose writer is slow (`bytepair count <(zcat
/// ...)`) blocks for as long as the writer waits, and neither the thread in it nor a scope
/// joining it can see Ctrl-C meanwhile. The caller waits on the receiver with a timeout instead
/// ([`recv_checking`]); one that stops drops the receiver and returns at once, and the thread
/// ends when its read returns. An error when the system refuses a thread (its limit on threads
/// or memory reached).
pub fn read_ahead<T: Send + 'static>(
    ahead: usize,
    produce: impl FnOnce(&dyn Fn(T) -> bool) + Send + 'static,
) -> std::io::Result<std::sync::mpsc::Receiver<T>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(ahead);
    std::thread::Builder::new()
        .name("bytepair-reader".into())
        .spawn(move || produce(&|item| tx.send(item).is_ok()))
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot start a reading thread: {e}"))
        })?;
    Ok(rx)
}

/// The next item of `rx` (`None` once its sender is gone), running `check` (Ctrl-C) every
/// [`interrupt::INTERVAL`] while none comes.
pub fn recv_checking<T, E>(
    rx: &std::sync::mpsc::Receiver<T>,
    check: &mut dyn FnMut() -> std::result::Result<(), E>,
) -> std::result::Result<Option<T>, E> {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        match rx.recv_timeout(interrupt::INTERVAL) {
            Ok(item) => return Ok(Some(item)),
            Err(RecvTimeoutError::Disconnected) => return Ok(None),
            Err(RecvTimeoutError::Timeout) => check()?,
        }
    }
}

/// A pool with `n` threads (`n == 0` means one per core).
///
/// After `fork` (Python's `multiprocessing` and data-loader workers on Linux) the child has only
/// the forking thread: the parent's pools have no threads there, and work sent to them would
/// wait forever. A forked child therefore starts a new set of pools, under a new lock (a thread
/// of the parent may have held the old one at the fork); the old ones are leaked, as dropping
/// one would signal threads that do not exist.
pub fn pool(n: usize) -> Arc<rayon::ThreadPool> {
    let n = if n == 0 { usable_cores() } else { n };
    pools()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
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

/// The pool for a call that asked for up to `requested` threads (0: one per core), capped at the
/// cores this process may use: more threads than cores only compete for them, and each costs a
/// wake-up per call. (tiktoken's batch default is 8 threads; on 2 cores, alternating 32-document
/// batch calls took 0.74 ms on 8 threads against 0.56-0.61 ms on 2.)
pub fn pool_for(requested: usize) -> Arc<rayon::ThreadPool> {
    let cores = usable_cores();
    pool(if requested == 0 {
        cores
    } else {
        requested.min(cores)
    })
}

/// `items.iter().map(f).collect()` on `pool`, with the calling thread working too.
///
/// Why not `pool.install(|| par_iter ...)`: that parks the caller while the pool's threads wake
/// up, which costs as much as the work for the small batches (tens of documents) that serving
/// code sends. Here the caller and `threads - 1` pool tasks pull blocks of items from one atomic
/// counter, so a batch is spread as soon as anyone is free, and the caller never waits for a pool
/// thread that has not started ([`with_helpers`]). Results keep the input order; the error of
/// the earliest failing item is returned.
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
    // One uncontended lock per item (each is written once); `T` need only be `Send`.
    let slots: Vec<Mutex<Option<crate::Result<T>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let start = next.fetch_add(block, Ordering::Relaxed);
        if start >= n {
            return;
        }
        for (k, item) in items[start..(start + block).min(n)].iter().enumerate() {
            let r = f(item);
            *slots[start + k].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        }
    };
    // Every block is taken when `work` returns on the caller; the running helpers finish theirs
    // before `with_helpers` returns.
    with_helpers(pool, threads - 1, &work);
    slots
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every item was processed")
        })
        .collect()
}

/// Calls `f(i, &mut items[i])` for every item, on the calling thread and up to `threads - 1`
/// of `pool`'s threads, which claim blocks of `block` items from one atomic counter.
///
/// Unlike a rayon scope, the caller never waits for a pool thread that has not started: on a
/// shared machine a worker can take milliseconds to be scheduled, and the caller, which starts at
/// once, may well have claimed every block by then. Workers that start after that do nothing.
///
/// Between blocks the calling thread runs the [`interrupt`] poll installed on it, if any; when
/// that asks to stop, no further block is handed out and `false` is returned (some items were
/// not visited). Otherwise returns `true`.
#[must_use = "false means interrupted: some items were not visited"]
pub fn for_each_mut<T: Send>(
    pool: &rayon::ThreadPool,
    items: &mut [T],
    block: usize,
    f: impl Fn(usize, &mut T) + Sync,
) -> bool {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let block = block.max(1);
    let n = items.len();
    let threads = pool.current_num_threads().min(n.div_ceil(block));
    if threads <= 1 {
        for (b, part) in items.chunks_mut(block).enumerate() {
            if interrupt::poll() {
                return false;
            }
            for (k, item) in part.iter_mut().enumerate() {
                f(b * block + k, item);
            }
        }
        return true;
    }
    // Each block is claimed once, so its lock is never contended; it only proves to the compiler
    // that no two threads hold the same items.
    let blocks: Vec<Mutex<&mut [T]>> = items.chunks_mut(block).map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    let stopped = std::sync::atomic::AtomicBool::new(false);
    let work = || loop {
        // Only the calling thread has a poll installed; on pool threads this is a cheap no.
        if interrupt::poll() {
            stopped.store(true, Ordering::Relaxed);
            // Every later claim lands past the end.
            next.store(blocks.len(), Ordering::Relaxed);
            return;
        }
        let b = next.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = blocks.get(b) else {
            return;
        };
        let mut part = slot.lock().unwrap_or_else(|e| e.into_inner());
        for (k, item) in part.iter_mut().enumerate() {
            f(b * block + k, item);
        }
    };
    with_helpers(pool, threads - 1, &work);
    !stopped.load(Ordering::Relaxed)
}

/// Ctrl-C for long native work: a caller (the Python bindings) installs a poll on its thread for
/// the duration of a call; [`for_each_mut`] runs it between blocks on that thread, at most every
/// [`interrupt::INTERVAL`], and stops handing out work once it returns `true`.
///
/// Why a thread-local: the kernels need no extra parameter, and pool threads (which cannot run
/// Python) never see a poll, so they just stop finding work.
pub mod interrupt {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    /// How often the poll runs at most (it re-attaches to the interpreter).
    pub const INTERVAL: Duration = Duration::from_millis(20);

    /// A poll that took `t` is not run again for `SLOW_POLL_FACTOR * t`, so that polling costs
    /// at most about 5% of the work. Why: re-attaching waits for the interpreter lock, and with
    /// another Python thread busy that takes up to its switch interval (5 ms); at a fixed 20 ms
    /// a long encode on the main thread then ran 1.35x as long instead of 1.10x (measured).
    pub const SLOW_POLL_FACTOR: u32 = 20;

    struct Installed {
        poll: *const (dyn Fn() -> bool + 'static),
        next: Instant,
        hit: bool,
    }

    thread_local! {
        static CURRENT: Cell<Option<Installed>> = const { Cell::new(None) };
    }

    /// Runs `f` with `poll` installed on this thread. Returns `f`'s result and whether the poll
    /// asked to stop (then `f`'s result is incomplete and should be dropped).
    pub fn with_poll<R>(poll: &dyn Fn() -> bool, f: impl FnOnce() -> R) -> (R, bool) {
        struct Restore(Option<Installed>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0.take()));
            }
        }
        // SAFETY: only the lifetime is erased; the pointer is removed (by `Restore`, also when
        // unwinding) before `poll` goes out of scope, and only this thread reads it.
        let erased: *const (dyn Fn() -> bool + 'static) = unsafe { std::mem::transmute(poll) };
        let prev = CURRENT.with(|c| {
            c.replace(Some(Installed {
                poll: erased,
                next: Instant::now() + INTERVAL,
                hit: false,
            }))
        });
        let restore = Restore(prev);
        let r = f();
        let hit = stopped();
        drop(restore);
        (r, hit)
    }

    /// Whether the poll installed on this thread has asked to stop (without running it).
    pub fn stopped() -> bool {
        CURRENT.with(|c| {
            let cur = c.take();
            let hit = cur.as_ref().is_some_and(|i| i.hit);
            c.set(cur);
            hit
        })
    }

    /// Whether the work on this thread should stop: runs the installed poll when it is due
    /// (sticky once it said stop); `false` where none is installed.
    #[inline]
    pub fn poll() -> bool {
        CURRENT.with(|c| {
            let Some(mut cur) = c.take() else {
                return false;
            };
            if !cur.hit {
                let now = Instant::now();
                if now >= cur.next {
                    // SAFETY: installed by `with_poll`, whose frame is still live.
                    cur.hit = unsafe { (*cur.poll)() };
                    let done = Instant::now();
                    cur.next = done + INTERVAL.max((done - now) * SLOW_POLL_FACTOR);
                }
            }
            let hit = cur.hit;
            c.set(Some(cur));
            hit
        })
    }
}

/// Runs `work` on the calling thread and, at the same time, on up to `helpers` of `pool`'s
/// threads; returns once the caller's call has returned and every helper that started `work` has
/// finished. A helper that starts after that returns without calling `work`, so `work` must be
/// complete when any one call of it returns (each call takes items from a shared counter until
/// none are left). A panic in any call is re-raised on the calling thread.
pub fn with_helpers(pool: &rayon::ThreadPool, helpers: usize, work: &(dyn Fn() + Sync)) {
    with_helpers_then(pool, helpers, work, work)
}

/// [`with_helpers`] where the calling thread runs its own `caller` (which need not be `Sync`:
/// it may hold the interpreter) instead of `work`, and its result is returned. Helpers that start
/// after `caller` has returned do not run `work`; so `caller` must not return before every item
/// it needs is done or taken by a helper that is running (items taken from a shared counter).
///
/// Why not a rayon scope: a scope's end waits for every spawned job to run, so a caller that
/// finished the work alone still waits for an idle core to wake up (0.5-2 ms on a shared VM,
/// as long as a whole batch of small documents).
pub fn with_helpers_then<R>(
    pool: &rayon::ThreadPool,
    helpers: usize,
    work: &(dyn Fn() + Sync),
    caller: impl FnOnce() -> R,
) -> R {
    use std::any::Any;
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
    use std::sync::Condvar;

    #[derive(Default)]
    struct State {
        closed: bool,
        running: usize,
        panic: Option<Box<dyn Any + Send>>,
    }
    struct Shared {
        state: Mutex<State>,
        idle: Condvar,
        work: *const (dyn Fn() + Sync + 'static),
        /// Set when the caller's interrupt poll asks to stop; the helpers' polls read it.
        abort: std::sync::atomic::AtomicBool,
    }
    // SAFETY: `work` is `Sync`; it is only called by helpers registered in `state` before
    // `closed` is set, and the caller does not return before they have all finished.
    unsafe impl Send for Shared {}
    unsafe impl Sync for Shared {}
    impl Shared {
        fn lock(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
    /// Closes the door to late helpers and waits for the running ones, also while unwinding.
    /// While it waits it runs the caller's interrupt poll, and passes a stop on to the helpers:
    /// a helper deep in one long item (a document of hundreds of MB) stops too.
    struct Close<'a>(&'a Shared);
    impl Drop for Close<'_> {
        fn drop(&mut self) {
            let abort = || self.0.abort.store(true, Ordering::Relaxed);
            if interrupt::stopped() {
                abort();
            }
            let mut st = self.0.lock();
            st.closed = true;
            // The running helpers usually finish within microseconds of the caller. Sleeping on
            // the condition variable at once would let this core go idle, and on a virtual
            // machine an idle core can take milliseconds to wake up when notified; so look again
            // for a while first.
            let spin_until = std::time::Instant::now() + CLOSE_SPIN;
            while st.running > 0 && std::time::Instant::now() < spin_until {
                drop(st);
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
                st = self.0.lock();
            }
            while st.running > 0 {
                let (g, _) = self
                    .0
                    .idle
                    .wait_timeout(st, interrupt::INTERVAL)
                    .unwrap_or_else(|e| e.into_inner());
                if g.running == 0 {
                    break;
                }
                drop(g);
                if interrupt::poll() {
                    abort();
                }
                st = self.0.lock();
            }
        }
    }

    if helpers == 0 {
        return caller();
    }
    // SAFETY: only the lifetime is erased; see `Shared`.
    let erased: &'static (dyn Fn() + Sync) = unsafe { std::mem::transmute(work) };
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        idle: Condvar::new(),
        work: erased,
        abort: std::sync::atomic::AtomicBool::new(false),
    });
    for _ in 0..helpers {
        let s = Arc::clone(&shared);
        pool.spawn(move || {
            {
                let mut st = s.lock();
                if st.closed {
                    // Late, but awake now: ready for the next call.
                    drop(st);
                    drop(s);
                    linger();
                    return;
                }
                st.running += 1;
            }
            // SAFETY: registered while open, so the caller is still waiting for us.
            let r = catch_unwind(AssertUnwindSafe(|| {
                let stop = || s.abort.load(Ordering::Relaxed);
                interrupt::with_poll(&stop, || unsafe { (*s.work)() })
            }));
            let mut st = s.lock();
            if let Err(p) = r {
                st.panic.get_or_insert(p);
            }
            st.running -= 1;
            if st.running == 0 {
                s.idle.notify_all();
            }
            drop(st);
            drop(s);
            linger();
        });
    }
    let r = {
        let _close = Close(&shared);
        caller()
    };
    let panic = shared.lock().panic.take();
    if let Some(p) = panic {
        resume_unwind(p);
    }
    r
}

/// How long the caller of [`with_helpers_then`] looks for its running helpers to finish before
/// it sleeps until they do.
const CLOSE_SPIN: std::time::Duration = std::time::Duration::from_micros(500);

/// How long a helper stays awake after its work, ready for the next call ([`linger`]):
/// `BYTEPAIR_SPIN_US` microseconds (0 turns it off), 5 ms by default.
pub fn spin_time() -> std::time::Duration {
    static SPIN: OnceLock<std::time::Duration> = OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = std::env::var("BYTEPAIR_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_SPIN_US);
        std::time::Duration::from_micros(us.min(1_000_000))
    })
}

/// See [`spin_time`]. Why 5 ms: on a virtual machine an idle core takes 0.5-2 ms to wake up, as
/// long as a whole batch of 32 small documents takes; a helper that is still awake when the next
/// call comes starts at once. (OpenBLAS's threads wait about 100 ms, Intel's OpenMP 200 ms.)
const DEFAULT_SPIN_US: u64 = 5_000;

/// Keeps a pool thread that just finished a helper's work awake for [`spin_time`], running any
/// job that reaches the pool meanwhile (the next call's helper, or any other rayon work, so no
/// work waits on a spinning thread); the clock restarts after each. Between checks it spins, and
/// every few microseconds yields the core; once a yield actually ran another thread (it took over
/// [`YIELDED`]), the core is wanted elsewhere and lingering stops, so a lingering helper does not
/// take CPU time from other threads or processes (another library's thread pool, say).
fn linger() {
    linger_for(spin_time(), true);
}

/// A yield that took longer than this ran another thread: this core is wanted.
const YIELDED: std::time::Duration = std::time::Duration::from_micros(50);

/// [`linger`] for `spin`; `give_way`: stop once another thread wants the core.
fn linger_for(spin: std::time::Duration, give_way: bool) {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local! {
        static LINGERING: Cell<bool> = const { Cell::new(false) };
    }
    // A job run from the loop below returns to it rather than nesting another loop.
    if spin.is_zero() || LINGERING.with(Cell::get) {
        return;
    }
    LINGERING.with(|l| l.set(true));
    let mut deadline = Instant::now() + spin;
    let mut rounds = 0u32;
    loop {
        if let Some(rayon::Yield::Executed) = rayon::yield_now() {
            deadline = Instant::now() + spin;
            continue;
        }
        if Instant::now() >= deadline {
            break;
        }
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        rounds += 1;
        if rounds.is_multiple_of(8) {
            // Another thread wants this core (the yield ran it): give way for good.
            let t = Instant::now();
            std::thread::yield_now();
            if give_way && t.elapsed() > YIELDED {
                break;
            }
        }
    }
    LINGERING.with(|l| l.set(false));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pipeline: every item reaches the consumer; the consumer's error comes back in `Ok`; a
    /// producer's error wins over the `Interrupted` its stop causes in a busy consumer, which
    /// stops within its work instead of finishing it.
    #[test]
    fn pipeline_results() {
        use crate::error::Error;
        use std::time::{Duration, Instant};
        let direct: Wait<'_> = &|f| f();
        let mut fine = || Ok::<(), String>(());
        let mut got = Vec::new();
        let r = pipeline(
            |rx| {
                got.extend(rx);
                Ok(())
            },
            |feed| {
                for i in 0..100 {
                    assert!(feed.send(i)?);
                }
                Ok(())
            },
            &mut fine,
            direct,
        );
        assert!(matches!(r, Ok(Ok(()))));
        assert_eq!(got, (0..100).collect::<Vec<_>>());

        let r = pipeline(
            |rx| match rx.recv() {
                Ok(_) => Err(Error::Value("bad item".into())),
                Err(_) => Ok(()),
            },
            |feed| {
                let mut sent = 0;
                while feed.send(sent)? {
                    sent += 1;
                }
                Ok(())
            },
            &mut fine,
            direct,
        );
        assert!(matches!(r, Ok(Err(Error::Value(_)))));

        // A consumer that works for 10 s in steps, looking at its interrupt poll.
        let t0 = Instant::now();
        let r = pipeline(
            |rx| {
                for _ in rx {
                    while t0.elapsed() < Duration::from_secs(10) {
                        if interrupt::poll() {
                            return Err(Error::Interrupted);
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Ok(())
            },
            |feed| {
                feed.send(1)?;
                Err("the source broke".to_string())
            },
            &mut fine,
            direct,
        );
        assert_eq!(r.unwrap_err(), "the source broke");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

        // A check that fails while the consumer is busy (Ctrl-C) stops it the same way.
        let t0 = Instant::now();
        let mut calls = 0;
        let mut ctrl_c = || {
            calls += 1;
            if calls < 3 {
                Ok(())
            } else {
                Err("ctrl-c".to_string())
            }
        };
        let r = pipeline(
            |rx| {
                let _first = rx.recv();
                while !interrupt::poll() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(Error::Interrupted)
            },
            |feed| {
                feed.send(1)?;
                feed.send(2)?;
                feed.send(3)?; // the queue is full: waits, checking
                Ok(())
            },
            &mut ctrl_c,
            direct,
        );
        assert_eq!(r.unwrap_err(), "ctrl-c");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    /// A lingering pool thread runs whatever reaches the pool: a job that needs every thread of
    /// the pool at once (a two-party barrier in a `join`) finishes while the other thread has
    /// seconds of lingering left (and does not give way, so only running the job can free it).
    #[test]
    fn a_lingering_thread_runs_the_pools_next_jobs() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let started = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&started);
        pool.spawn(move || {
            s.store(true, Ordering::SeqCst);
            linger_for(Duration::from_secs(4), false);
        });
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let t = Instant::now();
        for _ in 0..20 {
            let barrier = std::sync::Barrier::new(2);
            pool.install(|| rayon::join(|| barrier.wait(), || barrier.wait()));
        }
        // With the lingering thread blocked, the first barrier would wait 4 s.
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    /// Lingering ends when its time is up (at once for 0), and early once other threads want
    /// the cores: lingering threads on every core give way to as many busy threads.
    #[test]
    fn lingering_ends_and_gives_way() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::time::{Duration, Instant};
        let t = Instant::now();
        linger_for(Duration::ZERO, true);
        linger_for(Duration::from_millis(20), false);
        assert!(
            t.elapsed() >= Duration::from_millis(20),
            "{:?}",
            t.elapsed()
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ended = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let t = Instant::now();
        let lingerers: Vec<_> = (0..cores)
            .map(|_| {
                let ended = Arc::clone(&ended);
                std::thread::spawn(move || {
                    linger_for(Duration::from_secs(20), true);
                    ended.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        let busy: Vec<_> = (0..cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        while ended.load(Ordering::SeqCst) < cores && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        let waited = t.elapsed();
        busy.into_iter().for_each(|h| h.join().unwrap());
        lingerers.into_iter().for_each(|h| h.join().unwrap());
        assert!(
            waited < Duration::from_secs(10),
            "lingering did not give way: {waited:?}"
        );
    }

    /// A caller does not wait for its helper's lingering: calls whose 16 items of 200 us are
    /// shared with the helper take 1.6-3.2 ms (median of 40), not the 5 ms more they would if
    /// each waited out a 5 ms linger. The bound is the same work on one thread (3.2 ms on an
    /// idle machine) plus 2.5 ms, both measured in turns, so that a loaded machine (other
    /// tests, other jobs), which slows both, does not fail it.
    #[test]
    fn callers_do_not_wait_for_lingering_helpers() {
        use std::time::{Duration, Instant};
        let (pool, alone) = (pool_for(2), pool_for(1));
        if pool.current_num_threads() < 2 || spin_time() < Duration::from_millis(5) {
            return;
        }
        let call = |p: &rayon::ThreadPool| {
            let t = Instant::now();
            let mut v = vec![0u32; 16];
            assert!(for_each_mut(p, &mut v, 1, |i, x| {
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(200) {
                    std::hint::spin_loop();
                }
                *x = i as u32 + 1;
            }));
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 + 1));
            t.elapsed()
        };
        let (mut shared, mut one): (Vec<Duration>, Vec<Duration>) =
            (0..40).map(|_| (call(&pool), call(&alone))).unzip();
        shared.sort();
        one.sort();
        assert!(
            shared[20] < one[20] + Duration::from_micros(2500),
            "{shared:?} against one thread {one:?}"
        );
    }

    /// A child forked while another thread holds the pools' lock, and after the parent's pools
    /// have threads, runs parallel work on pools of its own. Before the child got a new lock, a
    /// fork taken while the lock was held left the child waiting on it forever.
    #[cfg(unix)]
    #[test]
    fn forked_children_get_pools_of_their_own() {
        use std::sync::atomic::AtomicBool;
        use std::time::{Duration, Instant};
        assert_eq!(pool(2).install(|| rayon::join(|| 1, || 2)), (1, 2));
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        // Takes the lock over and over, so that some forks happen while it is held.
        let busy = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for n in 1..4 {
                    drop(pool(n));
                }
            }
        });
        for _ in 0..50 {
            // SAFETY: the child only runs pool work and exits with `_exit`.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                let ok = pool(2).install(|| rayon::join(|| 1, || 2)) == (1, 2);
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let t = Instant::now();
            let mut status = 0;
            loop {
                // SAFETY: waits for our own child.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    break;
                }
                if t.elapsed() > Duration::from_secs(20) {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    stop.store(true, Ordering::Relaxed);
                    panic!("a forked child hung");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        }
        stop.store(true, Ordering::Relaxed);
        busy.join().unwrap();
    }

    #[test]
    fn pool_for_never_exceeds_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(usable_cores(), cores);
        assert_eq!(usable_cores(), cores, "the cached count");
        assert_eq!(pool_for(0).current_num_threads(), cores);
        assert_eq!(pool_for(1).current_num_threads(), 1);
        assert_eq!(pool_for(cores + 7).current_num_threads(), cores);
    }

    #[test]
    fn an_interrupt_stops_handing_out_work_on_every_pool_size() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        for threads in [1usize, 2, 4] {
            let pool = pool(threads);
            // A poll that never fires: everything is visited.
            let mut v = vec![0u8; 300];
            let (done, hit) = interrupt::with_poll(&|| false, || {
                for_each_mut(&pool, &mut v, 1, |_, x| {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                    *x = 1;
                })
            });
            assert!(
                done && !hit && v.iter().all(|&x| x == 1),
                "threads={threads}"
            );
            // One that fires on its first run (after INTERVAL): the loop stops early.
            let visited = AtomicUsize::new(0);
            let mut v = vec![0u8; 2000];
            let t = std::time::Instant::now();
            let (done, hit) = interrupt::with_poll(&|| true, || {
                for_each_mut(&pool, &mut v, 1, |_, _| {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    visited.fetch_add(1, Ordering::Relaxed);
                })
            });
            assert!(!done && hit, "threads={threads}");
            let n = visited.load(Ordering::Relaxed);
            assert!(n < 2000, "threads={threads}: {n} visited");
            assert!(
                t.elapsed() < std::time::Duration::from_millis(1500),
                "threads={threads}"
            );
        }
        // Nothing installed here any more.
        assert!(!interrupt::poll());
    }

    #[test]
    fn a_slow_poll_runs_less_often() {
        // A poll that takes 5 ms (as re-attaching does while another Python thread runs) is
        // spaced 100 ms apart, not 20 ms: about 10 runs in a second of work, not 40.
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::{Duration, Instant};
        let runs = AtomicUsize::new(0);
        let slow = || {
            std::thread::sleep(Duration::from_millis(5));
            runs.fetch_add(1, Ordering::Relaxed);
            false
        };
        let (_, hit) = interrupt::with_poll(&slow, || {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(1) {
                assert!(!interrupt::poll());
            }
        });
        assert!(!hit);
        let n = runs.load(Ordering::Relaxed);
        assert!((5..=15).contains(&n), "{n} polls in a second");
    }

    #[test]
    fn for_each_mut_visits_every_item_once() {
        let pool = pool(4);
        for n in [0usize, 1, 3, 64, 1000] {
            for block in [1usize, 7, 64] {
                let mut v = vec![0usize; n];
                assert!(for_each_mut(&pool, &mut v, block, |i, x| *x += i + 1));
                assert!(
                    v.iter().enumerate().all(|(i, &x)| x == i + 1),
                    "n={n} block={block}"
                );
            }
        }
    }

    #[test]
    fn helpers_join_the_caller() {
        // Work long enough (items of 2 ms) that a helper starts before the caller is done: some
        // items must be done on another thread. Fails if no helper ever runs.
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = pool(2);
        let caller = std::thread::current().id();
        let elsewhere = AtomicUsize::new(0);
        let mut v = vec![0u8; 100];
        assert!(for_each_mut(&pool, &mut v, 1, |_, x| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            if std::thread::current().id() != caller {
                elsewhere.fetch_add(1, Ordering::Relaxed);
            }
            *x = 1;
        }));
        assert!(v.iter().all(|&x| x == 1));
        assert!(elsewhere.load(Ordering::Relaxed) > 0, "no helper ran");
    }

    #[test]
    fn callers_on_many_threads_share_the_helpers() {
        // Eight callers at once post more tasks than there are helpers: each still gets every
        // item done exactly once, and none waits for a helper busy with another caller.
        let pool = pool(4);
        std::thread::scope(|s| {
            for t in 0..8usize {
                let pool = &pool;
                s.spawn(move || {
                    for round in 0..50usize {
                        let n = 1 + (t * 37 + round * 11) % 300;
                        let mut v = vec![0usize; n];
                        assert!(for_each_mut(pool, &mut v, 3, |i, x| *x += i + 1));
                        assert!(v.iter().enumerate().all(|(i, &x)| x == i + 1));
                    }
                });
            }
        });
    }

    #[test]
    fn a_panic_in_any_thread_reaches_the_caller_after_the_others_finish() {
        let pool = pool(4);
        for _ in 0..20 {
            let mut v = vec![0u32; 256];
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = for_each_mut(&pool, &mut v, 1, |i, x| {
                    if i == 200 {
                        panic!("item 200");
                    }
                    *x = 1;
                });
            }));
            assert!(r.is_err());
        }
    }
}
