//! Memory planning: every temporary buffer of a plan gets an offset in one arena.
//!
//! Liveness runs over the plan's execution order: a buffer is live from the first step that
//! touches it (writes it, or reads it) to the last step that reads it; graph outputs stay
//! live to the end. Both ends are inclusive, so a buffer read by step `s` and a buffer
//! written by step `s` are live together and never share memory: a kernel's outputs never
//! alias its inputs.
//!
//! Offsets come from greedy placement: buffers are visited in some order and each goes at
//! the lowest offset that does not overlap any already placed buffer whose lifetime
//! intersects its own. The planner tries two orders, largest first ("greedy by size") and
//! earliest start first ("greedy by lifetime start"), and keeps the smaller arena. If that
//! arena is above the lower bound, a short local search follows: swap two buffers in the
//! best order so far, keep the swap if the arena does not grow, stop at the lower bound or
//! after [`SEARCH_STEPS`] swaps (a fixed pseudo-random sequence, so plans are
//! reproducible). Every size is rounded up to [`ALIGN`] bytes, so every offset is aligned.
//!
//! Besides the arena size, a plan reports two figures to judge it by: the lower bound (the
//! largest total of buffers live at one step, which no placement can beat) and the total
//! without any sharing.
//!
//! Values that alias another value's memory ([`super::alias`]: views, concat parts written
//! in place, elementwise results written over an operand) are not buffers of their own:
//! each lies inside the buffer of the value it aliases, which lives from the first step
//! touching any of its values to the last step needing any of them. Aliased values thus
//! count once in the arena, the lower bound and the no-sharing total; the plan lists them
//! apart ([`MemoryPlan::aliases`]).

use super::alias::AliasCounts;
use super::pages::PageBuffer;

/// Alignment of every buffer in the arena, in bytes.
pub const ALIGN: usize = 64;

/// Swaps the local search tries at most.
pub const SEARCH_STEPS: usize = 256;

/// A buffer to place: its size and the steps it is live (both inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Size in bytes (rounded up to [`ALIGN`] when placed).
    pub bytes: usize,
    /// First step that touches the buffer.
    pub first: usize,
    /// Last step that needs the buffer.
    pub last: usize,
}

impl Lifetime {
    /// Whether two buffers are live at a common step.
    pub fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// The size rounded up to [`ALIGN`].
    pub fn aligned_bytes(&self) -> usize {
        align_up(self.bytes)
    }
}

/// `bytes` rounded up to a multiple of [`ALIGN`].
pub fn align_up(bytes: usize) -> usize {
    bytes.div_ceil(ALIGN).saturating_mul(ALIGN)
}

/// The order in which a placement visited the buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Largest first (ties: earlier start first).
    Size,
    /// Earliest lifetime start first (ties: larger first).
    Start,
    /// The better of the two, improved by local search.
    Search,
}

impl Order {
    /// The order's name, as dumps print it.
    pub fn name(self) -> &'static str {
        match self {
            Order::Size => "greedy by size",
            Order::Start => "greedy by lifetime start",
            Order::Search => "greedy, order improved by local search",
        }
    }
}

/// Offsets for a set of buffers, and the figures to judge them by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The offset of each buffer, in the order given.
    pub offsets: Vec<usize>,
    /// Bytes the arena needs (the end of the furthest buffer).
    pub arena_bytes: usize,
    /// The largest total of (aligned) buffers live at one step.
    pub lower_bound: usize,
    /// The total of all (aligned) buffers, as if none shared memory.
    pub unshared_bytes: usize,
    /// The visiting order that gave these offsets.
    pub order: Order,
}

/// Places the buffers: greedy by size and by lifetime start, keeping the smaller arena (by
/// size on ties), then local search while above the lower bound.
pub fn place(buffers: &[Lifetime]) -> Placement {
    let lower_bound = lower_bound(buffers);
    let unshared_bytes = buffers.iter().map(Lifetime::aligned_bytes).sum();
    let mut best_order = visiting_order(buffers, Order::Size);
    let (mut offsets, mut arena_bytes) = place_in_order(buffers, &best_order);
    let mut order = Order::Size;
    let by_start = visiting_order(buffers, Order::Start);
    let (start_offsets, start_arena) = place_in_order(buffers, &by_start);
    if start_arena < arena_bytes {
        (best_order, offsets, arena_bytes, order) =
            (by_start, start_offsets, start_arena, Order::Start);
    }
    let mut state = 0x853c_49e6_748f_ea9b_u64;
    let mut next = |bound: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as usize) % bound
    };
    let n = best_order.len();
    for _ in 0..SEARCH_STEPS {
        if arena_bytes <= lower_bound || n < 2 {
            break;
        }
        let mut trial = best_order.clone();
        trial.swap(next(n), next(n));
        let (trial_offsets, trial_arena) = place_in_order(buffers, &trial);
        if trial_arena <= arena_bytes {
            if trial_arena < arena_bytes {
                order = Order::Search;
            }
            (best_order, offsets, arena_bytes) = (trial, trial_offsets, trial_arena);
        }
    }
    Placement {
        offsets,
        arena_bytes,
        lower_bound,
        unshared_bytes,
        order,
    }
}

/// The indices of the buffers in the given visiting order ([`Order::Search`] starts from
/// the size order).
pub fn visiting_order(buffers: &[Lifetime], order: Order) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..buffers.len()).collect();
    match order {
        Order::Size | Order::Search => indices.sort_by_key(|&i| {
            let b = &buffers[i];
            (std::cmp::Reverse(b.aligned_bytes()), b.first, i)
        }),
        Order::Start => indices.sort_by_key(|&i| {
            let b = &buffers[i];
            (b.first, std::cmp::Reverse(b.aligned_bytes()), i)
        }),
    }
    indices
}

/// Places the buffers one by one in `order` (indices into `buffers`), each at the lowest
/// aligned offset clear of every placed buffer it overlaps in time. Returns the offsets (in
/// the order of `buffers`) and the arena size.
pub fn place_in_order(buffers: &[Lifetime], order: &[usize]) -> (Vec<usize>, usize) {
    let mut offsets = vec![0; buffers.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(order.len());
    let mut arena = 0;
    for &i in order {
        let Some(buffer) = buffers.get(i) else {
            continue;
        };
        let size = buffer.aligned_bytes();
        if size == 0 {
            placed.push(i);
            continue;
        }
        // Occupied ranges of the placed buffers live at the same time, by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| buffers[j].overlaps(buffer) && buffers[j].bytes > 0)
            .map(|&j| (offsets[j], offsets[j] + buffers[j].aligned_bytes()))
            .collect();
        busy.sort_unstable();
        let mut offset = 0;
        for (start, end) in busy {
            if offset + size <= start {
                break;
            }
            offset = offset.max(end);
        }
        offsets[i] = offset;
        arena = arena.max(offset + size);
        placed.push(i);
    }
    (offsets, arena)
}

/// The largest total of aligned buffer sizes live at one step: no placement can use less.
pub fn lower_bound(buffers: &[Lifetime]) -> usize {
    // The total changes only where a lifetime starts, so checking those steps suffices.
    buffers
        .iter()
        .map(|at| {
            buffers
                .iter()
                .filter(|b| b.first <= at.first && at.first <= b.last)
                .map(Lifetime::aligned_bytes)
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0)
}

/// Checks a placement: every buffer fits in the arena, and buffers live at a common step
/// do not share a byte. Returns the first problem found.
pub fn check(buffers: &[Lifetime], offsets: &[usize], arena_bytes: usize) -> Result<(), String> {
    if buffers.len() != offsets.len() {
        return Err(format!(
            "{} buffers but {} offsets",
            buffers.len(),
            offsets.len()
        ));
    }
    for (i, (a, &oa)) in buffers.iter().zip(offsets).enumerate() {
        if oa % ALIGN != 0 {
            return Err(format!(
                "buffer {i} at offset {oa} is not aligned to {ALIGN}"
            ));
        }
        if oa + a.bytes > arena_bytes {
            return Err(format!(
                "buffer {i} ({} bytes at {oa}) ends past the arena ({arena_bytes} bytes)",
                a.bytes
            ));
        }
        for (j, (b, &ob)) in buffers.iter().zip(offsets).enumerate().skip(i + 1) {
            let disjoint = oa + a.bytes <= ob || ob + b.bytes <= oa;
            if a.bytes > 0 && b.bytes > 0 && a.overlaps(b) && !disjoint {
                return Err(format!(
                    "buffers {i} (steps {}..={}, bytes {oa}..{}) and {j} (steps {}..={}, bytes {ob}..{}) overlap",
                    a.first,
                    a.last,
                    oa + a.bytes,
                    b.first,
                    b.last,
                    ob + b.bytes
                ));
            }
        }
    }
    Ok(())
}

/// Liveness over an execution order. `steps[s]` lists the buffers step `s` touches (reads
/// or writes); buffers in `live_to_end` (graph outputs) stay live to the last step. Returns
/// each buffer's `(first, last)` step, or `None` for a buffer no step touches and that is
/// not live to the end.
pub fn liveness(
    buffer_count: usize,
    steps: &[Vec<usize>],
    live_to_end: &[usize],
) -> Vec<Option<(usize, usize)>> {
    let mut live: Vec<Option<(usize, usize)>> = vec![None; buffer_count];
    for (s, touched) in steps.iter().enumerate() {
        for &b in touched {
            if let Some(range) = live.get_mut(b) {
                *range = Some(match *range {
                    Some((first, _)) => (first, s),
                    None => (s, s),
                });
            }
        }
    }
    let end = steps.len().saturating_sub(1);
    for &b in live_to_end {
        if let Some(range) = live.get_mut(b) {
            *range = Some(match *range {
                Some((first, _)) => (first, end),
                None => (0, end),
            });
        }
    }
    live
}

/// One temporary buffer of a plan, placed in the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaBuffer {
    /// The value it holds (or the kernel's scratch buffer it is).
    pub name: String,
    /// Offset in the arena, in bytes.
    pub offset: usize,
    /// Size in bytes.
    pub bytes: usize,
    /// First step that touches it.
    pub first: usize,
    /// Last step that needs it.
    pub last: usize,
}

/// A value stored inside another value's buffer (see [`super::alias`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasedValue {
    /// The value.
    pub name: String,
    /// What it aliases, as dumps print it: `view of x`, `in place of x`,
    /// `in concat c at +256`.
    pub how: String,
    /// Offset in the arena, in bytes (`None` for a view of a graph input or constant).
    pub offset: Option<usize>,
    /// Size in bytes.
    pub bytes: usize,
}

/// The arena layout of one plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Every buffer in the arena, in slot order.
    pub buffers: Vec<ArenaBuffer>,
    /// Every value stored in another value's memory, in value order.
    pub aliases: Vec<AliasedValue>,
    /// How often each aliasing rule fired.
    pub alias_counts: AliasCounts,
    /// Bytes the arena needs.
    pub arena_bytes: usize,
    /// The largest total of buffers live at one step.
    pub lower_bound_bytes: usize,
    /// The total of all buffers, as if none shared memory.
    pub unshared_bytes: usize,
    /// The visiting order that gave the smallest arena (`None` for an empty plan).
    pub order: Option<Order>,
}

impl MemoryPlan {
    /// Places named buffers with their lifetimes.
    pub fn new(named: Vec<(String, Lifetime)>) -> MemoryPlan {
        let lifetimes: Vec<Lifetime> = named.iter().map(|(_, l)| *l).collect();
        let placement = place(&lifetimes);
        let buffers = named
            .into_iter()
            .zip(&placement.offsets)
            .map(|((name, l), &offset)| ArenaBuffer {
                name,
                offset,
                bytes: l.bytes,
                first: l.first,
                last: l.last,
            })
            .collect::<Vec<_>>();
        MemoryPlan {
            order: (!buffers.is_empty()).then_some(placement.order),
            buffers,
            aliases: Vec::new(),
            alias_counts: AliasCounts::default(),
            arena_bytes: placement.arena_bytes,
            lower_bound_bytes: placement.lower_bound,
            unshared_bytes: placement.unshared_bytes,
        }
    }

    /// The plan as text: one line per buffer, one per aliased value, then the totals.
    pub fn dump(&self) -> String {
        let width = self
            .buffers
            .iter()
            .map(|b| b.name.len())
            .chain(self.aliases.iter().map(|a| a.name.len()))
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for b in &self.buffers {
            out.push_str(&format!(
                "{:<width$}  offset {:>10}  bytes {:>10}  steps {}..={}\n",
                b.name, b.offset, b.bytes, b.first, b.last
            ));
        }
        for a in &self.aliases {
            let offset = a.offset.map_or("-".to_string(), |o| o.to_string());
            out.push_str(&format!(
                "{:<width$}  offset {offset:>10}  bytes {:>10}  {}\n",
                a.name, a.bytes, a.how
            ));
        }
        let c = &self.alias_counts;
        out.push_str(&format!(
            "aliasing     {} views, {} concats in place ({} parts), {} in place\n",
            c.views, c.concats, c.concat_parts, c.in_place
        ));
        out.push_str(&format!(
            "arena        {} bytes ({})\n",
            self.arena_bytes,
            self.order.map_or("empty", Order::name)
        ));
        out.push_str(&format!("lower bound  {} bytes\n", self.lower_bound_bytes));
        out.push_str(&format!("no sharing   {} bytes\n", self.unshared_bytes));
        out
    }
}

/// An arena for one run: memory aligned to [`ALIGN`] bytes, on huge pages when large
/// ([`PageBuffer`]: a run's activations and scratch are written and read by every kernel).
///
/// Kernels write every element of their outputs before reading it, so the initial contents
/// do not matter: in release builds the arena is zeroed, in debug builds it is filled with
/// all-ones bytes (a NaN in every `f32`, -1 in every `i64`) so that a kernel that reads
/// memory it has not written shows up in the tests.
#[derive(Debug)]
pub struct Arena {
    memory: PageBuffer,
}

impl Arena {
    /// An arena of `bytes` bytes.
    pub fn new(bytes: usize) -> Arena {
        let fill = if cfg!(debug_assertions) { u8::MAX } else { 0 };
        Arena {
            memory: PageBuffer::filled(bytes, fill),
        }
    }

    /// The arena's bytes, starting at an aligned address.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.memory.as_bytes_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(bytes: usize, first: usize, last: usize) -> Lifetime {
        Lifetime { bytes, first, last }
    }

    #[test]
    fn a_chain_reuses_memory() {
        let chain: Vec<Lifetime> = (0..10).map(|s| life(1000, s, s + 1)).collect();
        let p = place(&chain);
        check(&chain, &p.offsets, p.arena_bytes).unwrap();
        assert_eq!(p.arena_bytes, 2 * align_up(1000));
        assert_eq!(p.lower_bound, 2 * align_up(1000));
        assert_eq!(p.unshared_bytes, 10 * align_up(1000));
    }

    #[test]
    fn liveness_extends_outputs_to_the_end() {
        let steps = vec![vec![0, 1], vec![1, 2], vec![2, 3]];
        let live = liveness(5, &steps, &[1]);
        assert_eq!(
            live,
            vec![Some((0, 0)), Some((0, 2)), Some((1, 2)), Some((2, 2)), None]
        );
    }

    #[test]
    fn arena_is_aligned() {
        let mut arena = Arena::new(100);
        let bytes = arena.bytes_mut();
        assert_eq!(bytes.len(), 100);
        assert_eq!(bytes.as_ptr() as usize % ALIGN, 0);
    }
}
