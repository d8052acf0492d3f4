//! The console's `tree` command: each zone's path from the root to its search address,
//! one node and its children, and what changed since the last `tree`.

use super::*;

/// Lines of changed summaries `tree` lists per zone besides the path.
pub(super) const MAX_CHANGED_LINES: usize = 12;

impl Console {
    /// `tree [ZONE]`: for each zone (or only ZONE), the path from the root to the chunk of
    /// its search address, then the other summaries that changed since the last `tree`.
    /// Without ZONE, a zone in which nothing changed since the last `tree` gets one line.
    pub(super) fn tree_paths(&mut self, only: Option<Zone>, out: &mut dyn Write) -> fmt::Result {
        let mut shown = false;
        for z in Zone::ALL {
            if only.is_some_and(|o| o != z) {
                continue;
            }
            let mut changed = Vec::with_capacity(MAX_CHANGED_LINES);
            let snapshot = &self.snapshot;
            let Some((search, path, stale, more, unchanged)) = frames::with_zones(|zones| {
                let pa = zone(zones, z)?;
                let search = pa.inspect().search_addr();
                let mut path = [None; SUMMARY_LEVELS];
                // Which entries of the path a change marked stale: asked before any read,
                // as reading recomputes them.
                let mut stale = [false; SUMMARY_LEVELS];
                if search != MAX_SEARCH_ADDR {
                    for (l, st) in stale.iter_mut().enumerate() {
                        let i = (search >> LEVEL_SHIFT[l]) as usize;
                        *st = pa.inspect().is_stale(l, i) == Some(true);
                    }
                    for (l, slot) in path.iter_mut().enumerate() {
                        let i = (search >> LEVEL_SHIFT[l]) as usize;
                        *slot = pa.inspect().summary(l, i).map(|s| (i, s));
                    }
                }
                let on_path = |l: usize, i: usize| path[l].is_some_and(|(j, _)| i == j);
                let mut more = 0;
                for l in 0..SUMMARY_LEVELS {
                    for (i, now) in pa.inspect().summaries(l).into_iter().flatten().enumerate() {
                        let was = snapshot.get(z, l, i);
                        if was != Some(now) && !on_path(l, i) {
                            if changed.len() < changed.capacity() {
                                changed.push((l, i, now, was));
                            } else {
                                more += 1;
                            }
                        }
                    }
                }
                let unchanged = (0..SUMMARY_LEVELS).all(|l| {
                    let now = pa
                        .inspect()
                        .summaries(l)
                        .map(Iterator::collect::<Vec<_>>)
                        .unwrap_or_default();
                    (0..now.len()).all(|i| snapshot.get(z, l, i) == Some(now[i]))
                });
                Some((search, path, stale, more, unchanged))
            }) else {
                continue;
            };
            shown = true;
            if unchanged && only.is_none() && self.trees_shown {
                writeln!(out, "zone {}: unchanged since the last `tree`", z.name())?;
                continue;
            }
            if search == MAX_SEARCH_ADDR {
                writeln!(out, "zone {}: no free page", z.name())?;
            } else {
                writeln!(
                    out,
                    "zone {}: search address {search:#x}; the path from the root to its chunk (counts in pages):",
                    z.name()
                )?;
            }
            for (l, entry) in path.iter().enumerate() {
                if let Some((i, now)) = *entry {
                    write_entry(out, 2, l, i, now, self.snapshot.get(z, l, i))?;
                }
            }
            if stale.contains(&true) {
                write!(out, "  marked stale by a change, recomputed by this read:")?;
                for (l, entry) in path.iter().enumerate() {
                    if let (true, Some((i, _))) = (stale[l], entry) {
                        write!(out, " L{l}[{i}]")?;
                    }
                }
                writeln!(out)?;
            }
            if !changed.is_empty() {
                writeln!(out, "  other summaries that changed since the last `tree`:")?;
                for &(l, i, now, was) in &changed {
                    write_entry(out, 2, l, i, now, was)?;
                }
                if more > 0 {
                    writeln!(out, "  ... and {more} more")?;
                }
            }
            self.snapshot.update_zone(z);
        }
        if !shown {
            writeln!(out, "tree: no such zone on this machine")?;
        }
        self.trees_shown = true;
        Ok(())
    }

    /// `tree LEVEL INDEX`: the entry and its eight children in every zone that has it.
    pub(super) fn tree_node(
        &mut self,
        level: usize,
        index: usize,
        only: Option<Zone>,
        out: &mut dyn Write,
    ) -> fmt::Result {
        let entries = 1usize << (PHYS_ADDR_BITS - LEVEL_SHIFT[level]);
        if index >= entries {
            return writeln!(
                out,
                "tree: level {level} has {entries} entries in the {PHYS_ADDR_BITS}-bit physical address space"
            );
        }
        let node = show::entry_range(level, index);
        let mut shown = false;
        for z in Zone::ALL {
            let (zbase, zlimit) = z.range();
            if node.1 <= zbase || zlimit <= node.0 || only.is_some_and(|o| o != z) {
                continue;
            }
            let mut children = [None; 8];
            let Some(sum) = frames::with_zones(|zones| {
                let pa = zone(zones, z)?;
                let sum = *pa
                    .inspect()
                    .summaries(level)
                    .map(Iterator::collect::<Vec<_>>)
                    .unwrap_or_default()
                    .get(index)?;
                if level + 1 < SUMMARY_LEVELS {
                    let below = pa
                        .inspect()
                        .summaries(level + 1)
                        .map(Iterator::collect::<Vec<_>>)
                        .unwrap_or_default();
                    for (k, slot) in children.iter_mut().enumerate() {
                        let c = index * 8 + k;
                        *slot = below.get(c).map(|&s| (c, s));
                    }
                }
                Some(sum)
            }) else {
                continue;
            };
            shown = true;
            write!(out, "zone {}: ", z.name())?;
            write_entry(
                out,
                0,
                level,
                index,
                sum,
                self.snapshot.get(z, level, index),
            )?;
            if level + 1 == SUMMARY_LEVELS {
                writeln!(
                    out,
                    "  a chunk: its children are the 512 pages of its bitmap"
                )?;
                chunk(node.0, out)?;
                continue;
            }
            for (i, now) in children.iter().flatten() {
                write_entry(
                    out,
                    2,
                    level + 1,
                    *i,
                    *now,
                    self.snapshot.get(z, level + 1, *i),
                )?;
            }
        }
        if !shown {
            writeln!(
                out,
                "tree: no zone has an entry L{level}[{index}] ({} lies beyond their memory)",
                node
            )?;
        }
        Ok(())
    }
}

/// Every zone's summaries as the last `tree` saw them, to show what changed since.
pub(super) struct Snapshot {
    levels: [[Vec<PallocSum>; SUMMARY_LEVELS]; 3],
}

impl Snapshot {
    pub(super) fn new() -> Snapshot {
        // Reserve outside the allocator's lock (the heap may grow); the levels never
        // change size, so `update` copies without allocating.
        let lens = frames::with_zones(|zones| {
            Zone::ALL
                .map(|z| zone(zones, z).map_or([0; SUMMARY_LEVELS], |pa| pa.layout().level_len()))
        });
        let mut s = Snapshot {
            levels: core::array::from_fn(|z| {
                core::array::from_fn(|l| Vec::with_capacity(lens[z][l]))
            }),
        };
        s.update();
        s
    }

    pub(super) fn update(&mut self) {
        for z in Zone::ALL {
            self.update_zone(z);
        }
    }

    pub(super) fn update_zone(&mut self, z: Zone) {
        frames::with_zones(|zones| {
            if let Some(pa) = zone(zones, z) {
                for (l, copy) in self.levels[z as usize].iter_mut().enumerate() {
                    let now = pa
                        .inspect()
                        .summaries(l)
                        .map(Iterator::collect::<Vec<_>>)
                        .unwrap_or_default();
                    debug_assert!(now.len() <= copy.capacity());
                    copy.clear();
                    copy.extend_from_slice(&now);
                }
            }
        });
    }

    pub(super) fn get(&self, z: Zone, level: usize, index: usize) -> Option<PallocSum> {
        self.levels[z as usize][level].get(index).copied()
    }
}
