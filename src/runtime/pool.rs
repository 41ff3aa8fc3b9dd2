//! Pools of run workspaces: each plan keeps the activation arenas (with their kernel pointer
//! tables) of finished runs for the next ones.
//!
//! A run takes a [`Workspace`] from its plan's [`ArenaPool`] (creating one when the pool is
//! empty), runs every kernel in it without holding any lock, and gives it back. The pool's
//! mutex is held only to pop or push. So the pool grows to the largest number of runs of one
//! plan in flight at once, and a warm run allocates nothing. At most `capacity` idle
//! workspaces are kept; a workspace given back to a full pool is freed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::memory::Arena;

/// What one run of a plan needs besides its inputs: the activation arena and a pointer table
/// holding, for every kernel launch in turn, the address of each of its buffers.
pub struct Workspace {
    /// The run's temporaries.
    pub arena: Arena,
    /// Buffer addresses of every launch, back to back (see the plan's table layout).
    pub table: Vec<*mut u8>,
}

// SAFETY: the table's pointers are scratch: a run overwrites every entry before any kernel
// reads it, and nothing dereferences them outside a run, which uses the workspace
// exclusively; the arena is plain owned memory.
unsafe impl Send for Workspace {}

impl Workspace {
    /// A workspace with an arena of `arena_bytes` and a table of `table_len` entries.
    pub fn new(arena_bytes: usize, table_len: usize) -> Workspace {
        Workspace {
            arena: Arena::new(arena_bytes),
            table: vec![std::ptr::null_mut(); table_len],
        }
    }
}

/// Idle workspaces of one plan.
pub struct ArenaPool {
    idle: Mutex<Vec<Workspace>>,
    capacity: usize,
    arena_bytes: usize,
    table_len: usize,
    created: AtomicUsize,
}

impl std::fmt::Debug for ArenaPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaPool")
            .field("idle", &self.idle())
            .field("created", &self.created())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl ArenaPool {
    /// An empty pool of workspaces with arenas of `arena_bytes` and tables of `table_len`
    /// entries, keeping at most `capacity` (at least 1) idle.
    pub fn new(arena_bytes: usize, table_len: usize, capacity: usize) -> ArenaPool {
        let capacity = capacity.max(1);
        ArenaPool {
            idle: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
            arena_bytes,
            table_len,
            created: AtomicUsize::new(0),
        }
    }

    /// An idle workspace, or a new one if none is idle.
    pub fn take(&self) -> Workspace {
        let popped = match self.idle.lock() {
            Ok(mut idle) => idle.pop(),
            // A poisoned pool only loses its idle workspaces.
            Err(_) => None,
        };
        popped.unwrap_or_else(|| {
            self.created.fetch_add(1, Ordering::Relaxed);
            Workspace::new(self.arena_bytes, self.table_len)
        })
    }

    /// Returns a workspace to the pool (freeing it if the pool is full).
    pub fn give(&self, workspace: Workspace) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.capacity
        {
            idle.push(workspace);
        }
    }

    /// Workspaces idle in the pool now.
    pub fn idle(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }

    /// Workspaces created so far (the most runs of this plan in flight at once, at least,
    /// while the pool never overflowed).
    pub fn created(&self) -> usize {
        self.created.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspaces_are_reused_and_the_pool_is_bounded() {
        let pool = ArenaPool::new(1024, 8, 2);
        let (a, b, c) = (pool.take(), pool.take(), pool.take());
        assert_eq!(pool.created(), 3);
        assert_eq!(a.table.len(), 8);
        pool.give(a);
        pool.give(b);
        pool.give(c);
        assert_eq!(pool.idle(), 2, "a full pool frees what comes back");
        let d = pool.take();
        assert_eq!(pool.created(), 3, "an idle workspace is reused");
        pool.give(d);
    }
}
