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
//! The chunks of a launch are dealt in one contiguous region per thread (see `Deal`), so
//! consecutive kernels whose loops run over the data in the same order leave each thread's
//! part of a tensor in its own cache for the next kernel.
//!
//! All bookkeeping (the queue, each launch's deal and finished chunk count) sits behind one
//! mutex, taken twice per chunk; chunks are large (see `SERIAL_THRESHOLD` in the runtime), so
//! the lock is never the bottleneck. Idle workers spin (1 ms by default) before sleeping on a
//! condition variable, and a poster spins as long for the workers' last chunks before it
//! sleeps, so the launches of a run (and of back-to-back runs) do not pay a wake-up each: a
//! sleeping thread takes tens of microseconds to wake, as long as a small kernel's whole
//! share (a 128→16 1×1 convolution on 55×55, alone: 0.30 ms median at 2 threads with a
//! 50 µs spin, 0.14 ms with 1 ms).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::codegen::KernelFn;
use crate::error::{Error, Result};

/// One kernel launch split into chunks: lives on the posting caller's stack.
struct Launch {
    func: KernelFn,
    table: *const *mut u8,
    start: i64,
    end: i64,
    stride: i64,
    /// Iterations of the parallel loop.
    trips: i64,
    /// Which chunk each claim takes (and how many there are) (changed only under the pool's mutex).
    deal: Deal,
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
        self.finished.load(Ordering::Relaxed) >= self.deal.chunks
    }

    /// The loop bounds of chunk `c`.
    fn range(&self, c: usize) -> (i64, i64) {
        let (c, chunks) = (c as i64, self.deal.chunks as i64);
        let lo = self.start + self.trips * c / chunks * self.stride;
        let hi = (self.start + self.trips * (c + 1) / chunks * self.stride).min(self.end);
        (lo, hi)
    }
}

/// How a launch's chunks are dealt: one contiguous region of chunks per thread.
///
/// A thread takes the front of its own region, then the back of the next region with
/// chunks left. Each thread thus works through one contiguous part of the loop, and touches
/// the same part of the data in consecutive kernels that run over it in the same order
/// (finding it in its own cache); a thread that runs out takes work from the far end of
/// another region, away from where that region's owner works.
///
/// The counters are atomics only so that a launch can be shared: every change happens
/// under the pool's mutex.
struct Deal {
    chunks: usize,
    /// Regions (at most [`MAX_REGIONS`]); thread `t` owns region `t % regions`.
    regions: usize,
    /// Chunks handed out.
    claimed: AtomicUsize,
    /// Per region, its next chunk from the front and the end of the chunks left at its back.
    front: [AtomicUsize; MAX_REGIONS],
    back: [AtomicUsize; MAX_REGIONS],
}

impl Deal {
    /// `chunks` chunks (at least 1) dealt to `threads` threads.
    fn new(chunks: usize, threads: usize) -> Deal {
        let chunks = chunks.max(1);
        let regions = threads.clamp(1, MAX_REGIONS).min(chunks);
        // Region `r`'s chunks (empty past the last region).
        let bound = |r: usize| chunks * r.min(regions) / regions;
        Deal {
            chunks,
            regions,
            claimed: AtomicUsize::new(0),
            front: std::array::from_fn(|r| AtomicUsize::new(bound(r))),
            back: std::array::from_fn(|r| AtomicUsize::new(bound(r + 1).max(bound(r)))),
        }
    }

    /// Whether every chunk has been handed out.
    fn all_claimed(&self) -> bool {
        self.claimed.load(Ordering::Relaxed) >= self.chunks
    }

    /// The next chunk for thread `thread` (the poster is 0, worker `i` is `i + 1`), or
    /// `None` when all are handed out.
    fn next(&self, thread: usize) -> Option<usize> {
        if self.all_claimed() {
            return None;
        }
        let own = thread % self.regions;
        let left =
            |r: usize| self.front[r].load(Ordering::Relaxed) < self.back[r].load(Ordering::Relaxed);
        let c = if left(own) {
            self.front[own].fetch_add(1, Ordering::Relaxed)
        } else {
            let r = (1..self.regions)
                .map(|d| (own + d) % self.regions)
                .find(|&r| left(r))?;
            self.back[r].fetch_sub(1, Ordering::Relaxed) - 1
        };
        self.claimed.fetch_add(1, Ordering::Relaxed);
        Some(c)
    }
}

/// Most regions a launch is dealt in (threads beyond share them).
const MAX_REGIONS: usize = 64;

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
    /// How long an idle worker spins, waiting for new work, before it sleeps (and a poster,
    /// for the workers' last chunks).
    spin: Duration,
    /// Launches in the queue, readable without the mutex (for spinning workers).
    queued: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, so a poisoned lock still holds sound state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands out the next chunk of `launch` for thread `thread` (removing the launch from
    /// the queue when that was its last): the chunk's entry point, table and bounds.
    ///
    /// # Safety
    /// `launch` must be posted and not yet fully finished; `state` is the pool's lock.
    unsafe fn claim(
        &self,
        state: &mut State,
        launch: LaunchPtr,
        thread: usize,
    ) -> Option<(KernelFn, *const *mut u8, (i64, i64))> {
        // SAFETY: the launch is alive (the caller's contract).
        let l = unsafe { &*launch.0 };
        // Under the lock: no other thread changes the counters meanwhile.
        let c = l.deal.next(thread)?;
        if l.deal.all_claimed()
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
        if finished == l.deal.chunks {
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
    /// Starts `count` worker threads (none for 0) that spin for `spin` when idle before
    /// they sleep.
    pub fn new(count: usize, spin: Duration) -> Result<Workers> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(64),
                shutdown: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            spin,
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
                .spawn(move || work(&shared, i + 1))
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
            deal: Deal::new(chunks, self.handles.len() + 1),
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
        while let Some((func, table, range)) = unsafe { shared.claim(&mut state, ptr, 0) } {
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
            while !launch.done() && waiting.elapsed() < shared.spin {
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

/// Worker thread `thread`'s loop (the poster of a launch is thread 0): take chunks from the
/// oldest launch, run them, sleep when idle.
fn work(shared: &Shared, thread: usize) {
    let mut state = shared.lock();
    loop {
        if state.shutdown {
            return;
        }
        let Some(&ptr) = state.queue.front() else {
            // Idle: spin a while without the lock, then sleep.
            drop(state);
            let idle = Instant::now();
            while shared.queued.load(Ordering::Relaxed) == 0 && idle.elapsed() < shared.spin {
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
        let Some((func, table, range)) = (unsafe { shared.claim(&mut state, ptr, thread) }) else {
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
    use super::Deal;

    /// Every claim in order, as (thread, chunk), the threads taking turns.
    fn deal_in_turns(chunks: usize, threads: usize) -> Vec<(usize, usize)> {
        let deal = Deal::new(chunks, threads);
        let mut claims = Vec::new();
        while let Some(c) = deal.next(claims.len() % threads) {
            claims.push((claims.len() % threads, c));
        }
        claims
    }

    #[test]
    fn every_chunk_is_dealt_once() {
        for threads in 1..=9 {
            for chunks in 1..=40 {
                let mut seen: Vec<usize> = deal_in_turns(chunks, threads)
                    .iter()
                    .map(|&(_, c)| c)
                    .collect();
                seen.sort_unstable();
                assert_eq!(
                    seen,
                    (0..chunks).collect::<Vec<_>>(),
                    "{chunks} over {threads}"
                );
            }
        }
    }

    #[test]
    fn threads_keep_to_their_regions() {
        // Two threads in turns: each works through its half, front to back.
        assert_eq!(
            deal_in_turns(8, 2),
            [
                (0, 0),
                (1, 4),
                (0, 1),
                (1, 5),
                (0, 2),
                (1, 6),
                (0, 3),
                (1, 7)
            ]
        );
        // A thread alone takes its region, then steals the other's from its back.
        let deal = Deal::new(8, 2);
        let alone: Vec<usize> = std::iter::from_fn(|| deal.next(1)).collect();
        assert_eq!(alone, [4, 5, 6, 7, 3, 2, 1, 0]);
        // Fewer chunks than threads: thread 3 owns region 1 (3 % 2), thread 1 finds its
        // region empty and steals region 0, thread 0 finds none.
        let deal = Deal::new(2, 4);
        assert_eq!(
            (deal.next(3), deal.next(1), deal.next(0)),
            (Some(1), Some(0), None)
        );
    }
}
