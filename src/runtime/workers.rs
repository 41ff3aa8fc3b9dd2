//! The worker pool that splits a kernel's parallel loop across threads.
//!
//! A compiled model with `threads = n` owns `n - 1` worker threads; the caller of a run is
//! the n-th: it posts a kernel launch as a `Launch` (the kernel, its pointer table and its
//! parallel loop cut into chunks) in a free slot of the pool, then takes chunks itself
//! alongside the workers until all are done. Several concurrent callers post in several
//! slots; workers take chunks from the first slot with chunks left. A caller that finds
//! every slot taken (more than [`SLOTS`] concurrent launches) runs its launch alone.
//!
//! Why not rayon: a thread outside a rayon pool enters it by pushing a job onto the pool's
//! injector queue, which allocates a new block every 63 pushes, so a warm run would not be
//! allocation-free. Here a launch lives on the caller's stack and the slots are fixed, so a
//! warm run allocates nothing.
//!
//! No lock on the way of a chunk: claiming one is a compare-and-swap on its region's
//! bounds, finishing one an atomic add. (With one mutex taken twice per chunk, 16 threads
//! queued on it: ResNet-18's launches took at least 70 µs each on 16 cores.) A worker
//! announces itself in a slot (`users`) before it reads the launch there, and a poster
//! withdraws its launch and waits for the slot's users to leave before its stack frame
//! (the launch) goes away, so no worker ever reads a launch that has ended.
//!
//! The chunks of a launch are dealt in one contiguous region per thread (see `Deal`), so
//! consecutive kernels whose loops run over the data in the same order leave each thread's
//! part of a tensor in its own cache for the next kernel.
//!
//! Idle workers spin (1 ms by default) before sleeping on a condition variable, and a
//! poster spins as long for the workers' last chunks before it sleeps, so the launches of a
//! run (and of back-to-back runs) do not pay a wake-up each: a sleeping thread takes tens of
//! microseconds to wake, as long as a small kernel's whole share (a 128→16 1×1 convolution
//! on 55×55, alone: 0.30 ms median at 2 threads with a 50 µs spin, 0.14 ms with 1 ms). The
//! mutex is taken only to sleep and to wake a sleeper.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
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
    /// Which chunk each claim takes (and how many there are).
    deal: Deal,
    /// Chunks finished.
    finished: AtomicUsize,
    /// Whether the poster sleeps, waiting for the last chunk.
    sleeping: AtomicBool,
}

impl Launch {
    /// Runs chunk `c` of the launch.
    ///
    /// # Safety
    /// The launch's table must hold one live pointer per kernel buffer, and chunk `c` must
    /// not run twice.
    unsafe fn run_chunk(&self, c: usize) {
        let (lo, hi) = self.range(c);
        // SAFETY: forwarded from the caller; `lo..hi` is a sub-range of the kernel's
        // parallel loop aligned to its step.
        unsafe { (self.func)(self.table, lo, hi) }
    }

    /// Whether every chunk has finished.
    fn done(&self) -> bool {
        self.finished.load(Ordering::SeqCst) >= self.deal.chunks
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
struct Deal {
    chunks: usize,
    /// Regions (at most [`MAX_REGIONS`]); thread `t` owns region `t % regions`.
    regions: usize,
    /// Per region, the chunks left: the next from the front (low 32 bits) and the end of
    /// those at its back (high 32 bits), changed together by compare-and-swap.
    left: [Padded<AtomicU64>; MAX_REGIONS],
}

/// A value on a cache line of its own (threads claiming from their own regions, or
/// announcing themselves in different slots, do not contend).
#[repr(align(64))]
struct Padded<T>(T);

impl Deal {
    /// `chunks` chunks (at least 1, at most `u32::MAX`) dealt to `threads` threads.
    fn new(chunks: usize, threads: usize) -> Deal {
        let chunks = chunks.clamp(1, u32::MAX as usize);
        let regions = threads.clamp(1, MAX_REGIONS).min(chunks);
        // Region `r`'s chunks (empty past the last region).
        let bound = |r: usize| (chunks * r.min(regions) / regions) as u64;
        Deal {
            chunks,
            regions,
            left: std::array::from_fn(|r| {
                let (front, back) = (bound(r), bound(r + 1).max(bound(r)));
                Padded(AtomicU64::new(front | back << 32))
            }),
        }
    }

    /// The next chunk for thread `thread` (the poster is 0, worker `i` is `i + 1`), or
    /// `None` when all are handed out.
    fn next(&self, thread: usize) -> Option<usize> {
        let own = thread % self.regions;
        self.take(own, true).or_else(|| {
            (1..self.regions)
                .map(|d| (own + d) % self.regions)
                .find_map(|r| self.take(r, false))
        })
    }

    /// A chunk from the front or the back of region `r`, if it has any left.
    fn take(&self, r: usize, front: bool) -> Option<usize> {
        let left = &self.left[r].0;
        let mut now = left.load(Ordering::Relaxed);
        loop {
            let (lo, hi) = (now & u64::from(u32::MAX), now >> 32);
            if lo >= hi {
                return None;
            }
            let (next, chunk) = if front {
                (now + 1, lo)
            } else {
                (lo | (hi - 1) << 32, hi - 1)
            };
            match left.compare_exchange_weak(now, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(chunk as usize),
                Err(actual) => now = actual,
            }
        }
    }
}

/// Most regions a launch is dealt in (threads beyond share them).
const MAX_REGIONS: usize = 64;

/// Launches that can be posted at once (concurrent callers beyond run theirs alone).
pub const SLOTS: usize = 64;

/// Where a launch is posted.
struct Slot {
    /// The posted launch, or null.
    launch: AtomicPtr<Launch>,
    /// Workers inside the slot: counted before they read `launch`, uncounted once they no
    /// longer touch the launch they found.
    users: AtomicUsize,
}

struct Shared {
    slots: [Padded<Slot>; SLOTS],
    /// Launches posted and not yet withdrawn (read by spinning workers).
    posted: AtomicUsize,
    /// Bumped by every post: a worker sleeps only if none came since it last looked.
    epoch: AtomicUsize,
    /// Workers asleep or about to be (a poster wakes them only if any).
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    /// Held to sleep and to wake; guards nothing else.
    lock: Mutex<()>,
    /// Signalled when a launch is posted (or on shutdown).
    work: Condvar,
    /// Signalled when a launch's last chunk finishes while its poster sleeps.
    done: Condvar,
    /// How long an idle worker spins, waiting for new work, before it sleeps (and a poster,
    /// for the workers' last chunks).
    spin: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data, so a poisoned lock is as good as any.
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs chunks of the launch in `slot` (if any) as thread `thread` until none are left
    /// to claim; whether it ran any.
    fn help(&self, slot: &Slot, thread: usize) -> bool {
        slot.users.fetch_add(1, Ordering::SeqCst);
        let launch = slot.launch.load(Ordering::SeqCst);
        let mut ran = false;
        // SAFETY: a launch read from its slot while this thread is counted among the slot's
        // users stays alive until it is uncounted: its poster withdraws it from the slot and
        // then waits for the slot to have no users before it returns.
        if let Some(l) = unsafe { launch.as_ref() } {
            while let Some(c) = l.deal.next(thread) {
                // SAFETY: the poster's contract (`Workers::launch`); each chunk is handed
                // out once.
                unsafe { l.run_chunk(c) };
                self.finish(l);
                ran = true;
            }
        }
        slot.users.fetch_sub(1, Ordering::SeqCst);
        ran
    }

    /// Records a finished chunk of `launch`, waking its poster if it was the last and the
    /// poster sleeps.
    fn finish(&self, launch: &Launch) {
        let finished = launch.finished.fetch_add(1, Ordering::SeqCst) + 1;
        if finished == launch.deal.chunks && launch.sleeping.load(Ordering::SeqCst) {
            // Under the lock: the poster checks the count and sleeps holding it, so the
            // notification cannot fall between the two.
            let _guard = self.lock();
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
            slots: std::array::from_fn(|_| {
                Padded(Slot {
                    launch: AtomicPtr::new(std::ptr::null_mut()),
                    users: AtomicUsize::new(0),
                })
            }),
            posted: AtomicUsize::new(0),
            epoch: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            work: Condvar::new(),
            done: Condvar::new(),
            spin,
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
            sleeping: AtomicBool::new(false),
        };
        let shared = &*self.shared;
        let ptr = (&raw const launch).cast_mut();
        let free = |s: &&Padded<Slot>| {
            s.0.launch
                .compare_exchange(
                    std::ptr::null_mut(),
                    ptr,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .is_ok()
        };
        let Some(Padded(slot)) = shared.slots.iter().find(free) else {
            // Every slot taken: the whole launch on this thread.
            while let Some(c) = launch.deal.next(0) {
                // SAFETY: the caller's contract; each chunk is handed out once.
                unsafe { launch.run_chunk(c) };
            }
            return;
        };
        shared.posted.fetch_add(1, Ordering::SeqCst);
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            // Under the lock: a worker checks the epoch and sleeps holding it.
            let _guard = shared.lock();
            shared.work.notify_all();
        }
        while let Some(c) = launch.deal.next(0) {
            // SAFETY: the caller's contract; each chunk is handed out once.
            unsafe { launch.run_chunk(c) };
            shared.finish(&launch);
        }
        // Wait for the chunks the workers took: spin a while (a worker's last chunk usually
        // ends within microseconds of ours, sooner than a sleeping thread wakes), then sleep.
        let waiting = Instant::now();
        while !launch.done() && waiting.elapsed() < shared.spin {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
        }
        if !launch.done() {
            let mut guard = shared.lock();
            launch.sleeping.store(true, Ordering::SeqCst);
            while !launch.done() {
                guard = shared.done.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
        }
        // Withdraw the launch, then wait for the workers that may still hold it (they
        // leave as soon as they find no chunk to claim).
        slot.launch.store(std::ptr::null_mut(), Ordering::SeqCst);
        shared.posted.fetch_sub(1, Ordering::SeqCst);
        while slot.users.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.lock();
            self.shared.work.notify_all();
        }
        for handle in self.handles.drain(..) {
            // A worker only ends by returning; a join error would mean it panicked, and
            // there is nothing left to clean up either way.
            let _ = handle.join();
        }
    }
}

/// Worker thread `thread`'s loop (the poster of a launch is thread 0): take chunks from
/// posted launches, spin a while when there are none, then sleep until the next post.
fn work(shared: &Shared, thread: usize) {
    let mut idle = Instant::now();
    loop {
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        // Read before looking: a launch posted after this bumps it.
        let epoch = shared.epoch.load(Ordering::SeqCst);
        let mut ran = false;
        if shared.posted.load(Ordering::SeqCst) > 0 {
            for Padded(slot) in &shared.slots {
                if !slot.launch.load(Ordering::Relaxed).is_null() {
                    ran |= shared.help(slot, thread);
                }
            }
        }
        if ran {
            idle = Instant::now();
            continue;
        }
        if idle.elapsed() < shared.spin {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            continue;
        }
        // Sleep until a launch is posted after the look above (every launch seen had all
        // its chunks claimed).
        let mut guard = shared.lock();
        shared.sleepers.fetch_add(1, Ordering::SeqCst);
        while shared.epoch.load(Ordering::SeqCst) == epoch
            && !shared.shutdown.load(Ordering::SeqCst)
        {
            guard = shared.work.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        shared.sleepers.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        idle = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::{Deal, SLOTS, Workers};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// A kernel counting each iteration `i` of its loop in `counts[i]` (`table[0]`).
    unsafe extern "C" fn count(table: *const *mut u8, lo: i64, hi: i64) {
        // SAFETY: the tests pass a table whose first pointer is an array of counters
        // covering the loop.
        let counts = unsafe { *table }.cast::<AtomicU32>();
        for i in lo..hi {
            unsafe { &*counts.add(i as usize) }.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// More concurrent callers than slots (the surplus runs alone), launches of 1 to 300
    /// chunks, workers that sleep between bursts (no spin) and workers that spin: every
    /// iteration of every launch runs exactly once, and the pool shuts down.
    #[test]
    fn every_iteration_runs_once_under_contention() {
        for spin in [Duration::ZERO, Duration::from_micros(200)] {
            let workers = Workers::new(3, spin).unwrap();
            std::thread::scope(|scope| {
                for caller in 0..SLOTS + 8 {
                    let workers = &workers;
                    scope.spawn(move || {
                        // Fewer and shorter under Miri, which checks the atomics' orderings.
                        let (launches, most) = if cfg!(miri) { (2, 20) } else { (20, 300) };
                        for launch in 0..launches {
                            let trips = 1 + (caller * 7 + launch * 13) % most;
                            let counts: Vec<AtomicU32> =
                                (0..trips).map(|_| AtomicU32::new(0)).collect();
                            let table = [counts.as_ptr().cast_mut().cast::<u8>()];
                            let chunks = 1 + launch % 9;
                            // SAFETY: `count` touches only its loop's counters, which the
                            // table holds for the whole launch.
                            unsafe {
                                workers.launch(count, table.as_ptr(), (0, trips as i64, 1), chunks)
                            };
                            assert!(
                                counts.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                                "caller {caller}, launch {launch}: {trips} trips in {chunks}"
                            );
                        }
                    });
                }
            });
            drop(workers);
        }
    }

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
