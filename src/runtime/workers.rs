//! The worker pool that splits a kernel's parallel loop across threads.
//!
//! A compiled model with `threads = n` owns `n - 1` worker threads; the caller of a run is
//! the n-th: it posts a kernel launch as a `Launch` (the kernel, its pointer table and its
//! parallel loop cut into chunks), then takes chunks itself alongside the workers until all
//! are done. Launches of several concurrent callers queue up in order of arrival; workers
//! take chunks from the oldest.
//!
//! Why not rayon: a thread outside a rayon pool enters it by pushing a job onto the pool's
//! injector queue, which allocates a new block every 63 pushes, so a warm run would not be
//! allocation-free. Here a launch lives on the caller's stack and the queue is a `VecDeque`
//! that grows to the largest number of concurrent callers and then stays, so a warm run
//! allocates nothing.
//!
//! All bookkeeping (the queue, each launch's next and finished chunk counts) sits behind one
//! mutex, taken twice per chunk; chunks are large (see `SERIAL_THRESHOLD` in the runtime), so
//! the lock is never the bottleneck. Idle workers spin briefly before sleeping on a condition
//! variable, so back-to-back launches of one run do not pay a wake-up each.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::codegen::KernelFn;
use crate::error::{Error, Result};

/// How long an idle worker spins, waiting for new work, before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

/// One kernel launch split into chunks: lives on the posting caller's stack.
struct Launch {
    func: KernelFn,
    table: *const *mut u8,
    start: i64,
    end: i64,
    stride: i64,
    /// Iterations of the parallel loop.
    trips: i64,
    chunks: usize,
    /// Contiguous regions the chunks are interleaved over (the threads).
    regions: usize,
    /// Next chunk to hand out (changed only under the pool's mutex).
    next: AtomicUsize,
    /// Chunks finished (changed only under the pool's mutex).
    finished: AtomicUsize,
}

impl Launch {
    /// Runs chunk `c` of the launch.
    ///
    /// # Safety
    /// The launch's table must hold one live pointer per kernel buffer, and chunk `c` must
    /// not run twice at the same time.
    unsafe fn run_chunk(func: KernelFn, table: *const *mut u8, range: (i64, i64)) {
        // SAFETY: forwarded from the caller; `range` is a sub-range of the kernel's parallel
        // loop aligned to its step.
        unsafe { func(table, range.0, range.1) }
    }

    /// Whether every chunk has finished.
    fn done(&self) -> bool {
        self.finished.load(Ordering::Relaxed) >= self.chunks
    }

    /// The loop bounds of the `c`-th chunk handed out.
    ///
    /// Chunks are handed out interleaved across `threads` contiguous regions of the loop
    /// (the first claim takes the start of region 0, the second the start of region 1, …),
    /// so that while all threads keep pace each works through one contiguous region: a
    /// thread then touches the same part of the data in consecutive kernels whose loops
    /// run over it in the same order, and finds it in its own cache.
    fn range(&self, c: usize) -> (i64, i64) {
        let c = interleaved(c, self.chunks, self.regions);
        let (c, chunks) = (c as i64, self.chunks as i64);
        let lo = self.start + self.trips * c / chunks * self.stride;
        let hi = (self.start + self.trips * (c + 1) / chunks * self.stride).min(self.end);
        (lo, hi)
    }
}

/// The chunk handed out `c`-th of `chunks` when they are dealt round-robin from
/// `regions` contiguous runs: the chunks, laid out as a grid of `regions` rows of
/// `chunks.div_ceil(regions)` (the last rows possibly shorter, by one), read column by column.
fn interleaved(c: usize, chunks: usize, regions: usize) -> usize {
    let per = chunks.div_ceil(regions.max(1));
    if per <= 1 || c >= chunks {
        return c;
    }
    // Rows holding all `per` chunks, and the length of the one partial row after them.
    let full = chunks / per;
    let rem = chunks - full * per;
    let (row, column) = if c < rem * (full + 1) {
        (c % (full + 1), c / (full + 1))
    } else {
        let c = c - rem * (full + 1);
        (c % full, rem + c / full)
    };
    row * per + column
}

/// A pointer to a posted launch.
#[derive(Clone, Copy, PartialEq, Eq)]
struct LaunchPtr(*const Launch);

// SAFETY: a launch's counters change only under the pool's mutex, its other fields never,
// and its poster does not return (freeing it) before it has
// seen, under the mutex, every chunk finished, after which no worker touches it: see
// `Workers::launch`.
unsafe impl Send for LaunchPtr {}

struct State {
    /// Launches with chunks not yet handed out, oldest first.
    queue: VecDeque<LaunchPtr>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a launch is posted (or on shutdown).
    work: Condvar,
    /// Signalled when a launch's last chunk finishes.
    done: Condvar,
    /// Launches in the queue, readable without the mutex (for spinning workers).
    queued: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, so a poisoned lock still holds sound state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands out the next chunk of `launch` (removing it from the queue when that was its
    /// last): the chunk's index, entry point, table and bounds.
    ///
    /// # Safety
    /// `launch` must be posted and not yet fully finished; `state` is the pool's lock.
    unsafe fn claim(
        &self,
        state: &mut State,
        launch: LaunchPtr,
    ) -> Option<(KernelFn, *const *mut u8, (i64, i64))> {
        // SAFETY: the launch is alive (the caller's contract).
        let l = unsafe { &*launch.0 };
        let c = l.next.load(Ordering::Relaxed);
        if c >= l.chunks {
            return None;
        }
        // Under the lock: no other thread changes `next` meanwhile.
        l.next.store(c + 1, Ordering::Relaxed);
        if c + 1 == l.chunks
            && let Some(pos) = state.queue.iter().position(|&p| p == launch)
        {
            state.queue.remove(pos);
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        Some((l.func, l.table, l.range(c)))
    }

    /// Records a finished chunk of `launch`, waking its poster if it was the last.
    ///
    /// # Safety
    /// The caller ran a chunk of `launch` it claimed; `state` is the pool's lock.
    unsafe fn finish(&self, launch: LaunchPtr) {
        // SAFETY: the launch cannot be finished before this chunk is counted, so its poster
        // is still waiting and the launch is alive; the lock is held by the caller.
        let l = unsafe { &*launch.0 };
        let finished = l.finished.fetch_add(1, Ordering::Relaxed) + 1;
        if finished == l.chunks {
            self.done.notify_all();
        }
    }
}

/// A pool of worker threads for splitting kernel launches.
pub struct Workers {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.handles.len())
            .finish()
    }
}

impl Workers {
    /// Starts `count` worker threads (none for 0).
    pub fn new(count: usize) -> Result<Workers> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(64),
                shutdown: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            queued: AtomicUsize::new(0),
        });
        let mut workers = Workers {
            shared,
            handles: Vec::with_capacity(count),
        };
        for i in 0..count {
            let shared = workers.shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("fovea-worker-{i}"))
                .spawn(move || work(&shared))
                .map_err(|e| Error::internal(format!("starting worker thread {i}: {e}")))?;
            workers.handles.push(handle);
        }
        Ok(workers)
    }

    /// Number of worker threads (the caller of a launch makes one more).
    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `func` over `start..end` (step `stride`) in `chunks` pieces, on the calling thread
    /// and the workers; returns when every piece has run.
    ///
    /// # Safety
    /// `table` must hold one pointer per kernel buffer, valid for the whole call, for which
    /// `func` was compiled and verified; `start..end` must be the kernel's parallel loop,
    /// whose iterations are independent.
    pub unsafe fn launch(
        &self,
        func: KernelFn,
        table: *const *mut u8,
        (start, end, stride): (i64, i64, i64),
        chunks: usize,
    ) {
        let trips = ((end - start).max(0) + stride - 1) / stride.max(1);
        let launch = Launch {
            func,
            table,
            start,
            end,
            stride: stride.max(1),
            trips,
            chunks: chunks.max(1),
            regions: self.handles.len() + 1,
            next: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        };
        let ptr = LaunchPtr(&launch);
        let shared = &*self.shared;
        let mut state = shared.lock();
        state.queue.push_back(ptr);
        shared.queued.fetch_add(1, Ordering::Relaxed);
        shared.work.notify_all();
        // Take chunks of this launch until none are left to hand out.
        // SAFETY (claims): the launch is alive (it is ours) and the lock is held.
        while let Some((func, table, range)) = unsafe { shared.claim(&mut state, ptr) } {
            drop(state);
            // SAFETY: the caller's contract; each chunk is handed out once.
            unsafe { Launch::run_chunk(func, table, range) };
            state = shared.lock();
            // SAFETY: we ran a chunk we claimed, under the lock.
            unsafe { shared.finish(ptr) };
        }
        // Wait for the chunks the workers took: spin a while without the lock (a worker's
        // last chunk usually ends within microseconds of ours, sooner than a sleeping
        // thread wakes), then sleep. Once every chunk is finished (seen under the lock) no
        // worker holds or can find a pointer to the launch, so it may be dropped.
        if !launch.done() {
            drop(state);
            let waiting = Instant::now();
            while !launch.done() && waiting.elapsed() < SPIN {
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
            }
            state = shared.lock();
        }
        while !launch.done() {
            state = shared.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        drop(state);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        for handle in self.handles.drain(..) {
            // A worker only ends by returning; a join error would mean it panicked, and
            // there is nothing left to clean up either way.
            let _ = handle.join();
        }
    }
}

/// A worker thread's loop: take chunks from the oldest launch, run them, sleep when idle.
fn work(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if state.shutdown {
            return;
        }
        let Some(&ptr) = state.queue.front() else {
            // Idle: spin a while without the lock, then sleep.
            drop(state);
            let idle = Instant::now();
            while shared.queued.load(Ordering::Relaxed) == 0 && idle.elapsed() < SPIN {
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
            }
            state = shared.lock();
            if state.queue.is_empty() && !state.shutdown {
                state = shared.work.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            continue;
        };
        // SAFETY: a launch in the queue has chunks left, so its poster is waiting for them.
        let Some((func, table, range)) = (unsafe { shared.claim(&mut state, ptr) }) else {
            continue;
        };
        drop(state);
        // SAFETY: the poster's contract (`Workers::launch`); each chunk is handed out once.
        unsafe { Launch::run_chunk(func, table, range) };
        state = shared.lock();
        // SAFETY: we ran a chunk we claimed, under the lock.
        unsafe { shared.finish(ptr) };
    }
}

#[cfg(test)]
mod tests {
    use super::interleaved;

    #[test]
    fn interleaving_deals_every_chunk_once() {
        for regions in 1..=9 {
            for chunks in 1..=40 {
                let mut seen: Vec<usize> = (0..chunks)
                    .map(|c| interleaved(c, chunks, regions))
                    .collect();
                seen.sort_unstable();
                assert_eq!(
                    seen,
                    (0..chunks).collect::<Vec<_>>(),
                    "{chunks} over {regions}"
                );
            }
        }
        // Two threads, eight chunks: the first two claims start the two halves.
        let order: Vec<usize> = (0..8).map(|c| interleaved(c, 8, 2)).collect();
        assert_eq!(order, [0, 4, 1, 5, 2, 6, 3, 7]);
        // Ten chunks over four regions of three (the last one short).
        let order: Vec<usize> = (0..10).map(|c| interleaved(c, 10, 4)).collect();
        assert_eq!(order, [0, 3, 6, 9, 1, 4, 7, 2, 5, 8]);
    }
}
