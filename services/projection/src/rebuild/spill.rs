//! Sorted runs of rollup day cells spilled to local files when the cells do not fit the
//! rebuild's memory budget, and their merge back into one sorted stream.
//!
//! A run is a file of fixed-size records sorted by [`CellKey`], each a cell's local slice number
//! (`u32`), day (days from the common era, `i32`), metric (its index in [`Metric::ALL`], one
//! byte) and partial sum (`i128`), little-endian: [`RECORD_BYTES`] bytes. A run holds the cells
//! of one share of the rollup slices ([`share_of`]), so each writing worker merges its own runs
//! and nothing else. The runs live in a directory of their own under the rebuild's spill
//! directory, made at the first spill and removed with everything in it when the rebuild ends,
//! whether it succeeded or not. A process killed meanwhile leaves its directory behind; the next
//! rebuild that spills into the same place removes it (the directory names the process: one
//! whose process is gone is stale; Linux only, elsewhere they are left to the operator).
//!
//! A merge reads at most [`MERGE_WIDTH`] runs at once (each through a buffer of
//! [`READ_BUFFER`] bytes); a share with more runs first merges the oldest ones into one run,
//! adding up equal cells, until it has few enough.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Datelike, NaiveDate};
use stats::Metric;

use super::{CellKey, RebuildError, share_of};
use crate::rollup::metric_index;

/// Bytes of one record: slice number, day, metric, partial sum.
pub(super) const RECORD_BYTES: usize = 4 + 4 + 1 + 16;
/// The most runs one merge reads at once.
pub(super) const MERGE_WIDTH: usize = 64;
/// The read buffer of each run being merged.
const READ_BUFFER: usize = 64 * 1024;
/// The write buffer of each run being written.
const WRITE_BUFFER: usize = 256 * 1024;

/// A cell read from a run or a merge (an I/O error or a corrupt run stops the rebuild).
pub(super) type Cell = Result<(CellKey, i128), RebuildError>;

/// The spilled runs of one rebuild, per share of the rollup slices.
pub(super) struct Spill {
    /// Where the runs' own directory is made.
    base: PathBuf,
    /// The runs' directory, once made (at the first run).
    dir: Mutex<Option<PathBuf>>,
    /// The run files of each share, oldest first.
    runs: Vec<Mutex<Vec<PathBuf>>>,
    /// Numbers the run files.
    next_file: AtomicU64,
    /// Runs with at most this many files are merged at once (tests lower it).
    merge_width: usize,
}

impl Spill {
    /// Runs for `shares` shares, to be written in a directory made under `base` when needed.
    pub(super) fn new(base: PathBuf, shares: usize) -> Spill {
        Spill {
            base,
            dir: Mutex::new(None),
            runs: (0..shares.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
            next_file: AtomicU64::new(0),
            merge_width: MERGE_WIDTH,
        }
    }

    #[cfg(test)]
    fn with_merge_width(mut self, width: usize) -> Spill {
        self.merge_width = width.max(2);
        self
    }

    fn shares(&self) -> usize {
        self.runs.len()
    }

    /// Writes sorted `cells` of every share as one run per share that has any (cells whose sum
    /// is 0 left out). Returns whether any was written.
    pub(super) fn write_partitioned(
        &self,
        cells: &[(CellKey, i128)],
    ) -> Result<bool, RebuildError> {
        let shares = self.shares();
        let mut writers: Vec<Option<RunWriter>> = (0..shares).map(|_| None).collect();
        for &(key, value) in cells {
            if value == 0 {
                continue;
            }
            let share = share_of(key.dims, shares);
            let writer = match &mut writers[share] {
                Some(w) => w,
                slot => slot.insert(RunWriter::create(self.new_path()?)?),
            };
            writer.push(key, value)?;
        }
        let mut any = false;
        for (share, writer) in writers.into_iter().enumerate() {
            if let Some(w) = writer {
                let path = w.finish()?;
                self.add(share, path)?;
                any = true;
            }
        }
        Ok(any)
    }

    /// Writes sorted `cells`, all of `share`, as one run (cells whose sum is 0 left out).
    pub(super) fn write_share(
        &self,
        share: usize,
        cells: &[(CellKey, i128)],
    ) -> Result<(), RebuildError> {
        let path = self.write_run(cells.iter().copied().map(Ok))?;
        self.add(share, path)
    }

    /// Whether `share` has spilled runs.
    pub(super) fn has_runs(&self, share: usize) -> Result<bool, RebuildError> {
        Ok(!self.share_runs(share)?.is_empty())
    }

    /// Every cell of `share`'s runs and of the sorted `last` cells (not spilled), in key order;
    /// equal keys are adjacent (not added up). Merges the oldest runs first while there are
    /// more than the merge width.
    pub(super) fn merged<'a>(
        &'a self,
        share: usize,
        last: &'a [(CellKey, i128)],
    ) -> Result<Merge<'a>, RebuildError> {
        loop {
            let oldest: Vec<PathBuf> = {
                let runs = self.share_runs(share)?;
                if runs.len() < self.merge_width {
                    break;
                }
                runs[..self.merge_width].to_vec()
            };
            let sources = oldest
                .iter()
                .map(|p| RunReader::open(p).map(Source::File))
                .collect::<Result<Vec<_>, _>>()?;
            let merged = self.write_run(Summed::new(Merge::new(sources)?))?;
            let mut runs = self.share_runs(share)?;
            runs.drain(..oldest.len());
            runs.push(merged);
            for p in &oldest {
                std::fs::remove_file(p).map_err(|e| spill_error(p, e))?;
            }
        }
        let mut sources = self
            .share_runs(share)?
            .iter()
            .map(|p| RunReader::open(p).map(Source::File))
            .collect::<Result<Vec<_>, _>>()?;
        sources.push(Source::Memory(last.iter()));
        Merge::new(sources)
    }

    fn share_runs(
        &self,
        share: usize,
    ) -> Result<std::sync::MutexGuard<'_, Vec<PathBuf>>, RebuildError> {
        self.runs
            .get(share)
            .ok_or_else(|| RebuildError::Internal(format!("no share {share}")))?
            .lock()
            .map_err(|_| RebuildError::Internal("a worker panicked while spilling".into()))
    }

    fn add(&self, share: usize, path: PathBuf) -> Result<(), RebuildError> {
        self.share_runs(share)?.push(path);
        Ok(())
    }

    /// Writes `cells` (sorted) as a new run; returns its path.
    fn write_run(&self, cells: impl Iterator<Item = Cell>) -> Result<PathBuf, RebuildError> {
        let mut writer = RunWriter::create(self.new_path()?)?;
        for cell in cells {
            let (key, value) = cell?;
            if value != 0 {
                writer.push(key, value)?;
            }
        }
        writer.finish()
    }

    /// The path of a new run file (the runs' directory made if it is not yet).
    fn new_path(&self) -> Result<PathBuf, RebuildError> {
        let mut dir = self
            .dir
            .lock()
            .map_err(|_| RebuildError::Internal("a worker panicked while spilling".into()))?;
        let dir = match &mut *dir {
            Some(d) => d,
            none => none.insert(make_dir(&self.base)?),
        };
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        Ok(dir.join(format!("run-{n:06}")))
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let dir = match self.dir.get_mut() {
            Ok(dir) => dir.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(dir) = dir
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the rebuild's spilled runs");
        }
    }
}

/// The prefix of a rebuild's runs' directory; the rest is `{pid}-{nanoseconds}-{attempt}`.
const DIR_PREFIX: &str = "motcua-rebuild-";

/// Makes a new directory for one rebuild's runs under `base` (after removing stale ones).
fn make_dir(base: &Path) -> Result<PathBuf, RebuildError> {
    remove_stale(base);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for attempt in 0u32..100 {
        let dir = base.join(format!(
            "{DIR_PREFIX}{}-{stamp}-{attempt}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(spill_error(&dir, e)),
        }
    }
    Err(RebuildError::Internal(format!(
        "no free name for the spilled runs in {}",
        base.display()
    )))
}

/// Removes the runs' directories under `base` left by rebuilds whose process is gone (killed
/// while spilling). Best effort: what cannot be read or removed is left, with a warning.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(rebuild_pid) else {
            continue;
        };
        if process_alive(pid) != Some(false) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "removed the runs of a rebuild that was killed")
            }
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove the runs of a killed rebuild")
            }
        }
    }
}

/// The process id in a runs' directory name `motcua-rebuild-{pid}-{nanoseconds}-{attempt}`;
/// `None` for any other name.
fn rebuild_pid(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix(DIR_PREFIX)?.split('-');
    let pid = parts.next()?.parse().ok()?;
    let (stamp, attempt) = (parts.next()?, parts.next()?);
    let numbers = stamp.parse::<u128>().is_ok() && attempt.parse::<u32>().is_ok();
    (numbers && parts.next().is_none()).then_some(pid)
}

/// Whether process `pid` runs on this machine: `None` where that cannot be told (no `/proc`).
fn process_alive(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    Some(Path::new("/proc").join(pid.to_string()).exists())
}

fn spill_error(path: &Path, source: std::io::Error) -> RebuildError {
    RebuildError::Spill {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes one run.
struct RunWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl RunWriter {
    fn create(path: PathBuf) -> Result<RunWriter, RebuildError> {
        let file = File::create_new(&path).map_err(|e| spill_error(&path, e))?;
        Ok(RunWriter {
            out: BufWriter::with_capacity(WRITE_BUFFER, file),
            path,
        })
    }

    fn push(&mut self, key: CellKey, value: i128) -> Result<(), RebuildError> {
        self.out
            .write_all(&encode(key, value))
            .map_err(|e| spill_error(&self.path, e))
    }

    fn finish(mut self) -> Result<PathBuf, RebuildError> {
        self.out.flush().map_err(|e| spill_error(&self.path, e))?;
        Ok(self.path)
    }
}

fn encode(key: CellKey, value: i128) -> [u8; RECORD_BYTES] {
    let mut record = [0u8; RECORD_BYTES];
    record[0..4].copy_from_slice(&key.dims.to_le_bytes());
    record[4..8].copy_from_slice(&key.day.num_days_from_ce().to_le_bytes());
    record[8] = metric_index(key.metric) as u8;
    record[9..25].copy_from_slice(&value.to_le_bytes());
    record
}

fn decode(record: &[u8; RECORD_BYTES]) -> Option<(CellKey, i128)> {
    let word = |at: usize| [record[at], record[at + 1], record[at + 2], record[at + 3]];
    let day = NaiveDate::from_num_days_from_ce_opt(i32::from_le_bytes(word(4)))?;
    let metric = *Metric::ALL.get(usize::from(record[8]))?;
    let mut value = [0u8; 16];
    value.copy_from_slice(&record[9..25]);
    let key = CellKey {
        dims: u32::from_le_bytes(word(0)),
        day,
        metric,
    };
    Some((key, i128::from_le_bytes(value)))
}

/// Reads one run back, checking that it is sorted.
struct RunReader {
    path: PathBuf,
    input: BufReader<File>,
    last: Option<CellKey>,
}

impl RunReader {
    fn open(path: &Path) -> Result<RunReader, RebuildError> {
        let file = File::open(path).map_err(|e| spill_error(path, e))?;
        Ok(RunReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(READ_BUFFER, file),
            last: None,
        })
    }

    fn corrupt(&self, what: &str) -> RebuildError {
        RebuildError::Internal(format!("spilled run {}: {what}", self.path.display()))
    }
}

impl Iterator for RunReader {
    type Item = Cell;

    fn next(&mut self) -> Option<Cell> {
        let mut record = [0u8; RECORD_BYTES];
        let mut filled = 0;
        while filled < RECORD_BYTES {
            match self.input.read(&mut record[filled..]) {
                Ok(0) if filled == 0 => return None,
                Ok(0) => return Some(Err(self.corrupt("a record cut short"))),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(spill_error(&self.path, e))),
            }
        }
        let Some((key, value)) = decode(&record) else {
            return Some(Err(self.corrupt("an undecodable record")));
        };
        if self.last.is_some_and(|last| last > key) {
            return Some(Err(self.corrupt("records out of order")));
        }
        self.last = Some(key);
        Some(Ok((key, value)))
    }
}

/// What a merge reads: a run, or the cells still in memory.
enum Source<'a> {
    File(RunReader),
    Memory(std::slice::Iter<'a, (CellKey, i128)>),
}

impl Source<'_> {
    fn next_cell(&mut self) -> Option<Cell> {
        match self {
            Source::File(run) => run.next(),
            Source::Memory(cells) => cells.next().copied().map(Ok),
        }
    }
}

/// A k-way merge of sorted sources into one sorted stream of cells (equal keys adjacent, in no
/// particular order among themselves).
pub(super) struct Merge<'a> {
    sources: Vec<Source<'a>>,
    /// The next key of each source that has one, with the source's index.
    heap: BinaryHeap<Reverse<(CellKey, usize)>>,
    /// The value that goes with each source's key in `heap`.
    values: Vec<i128>,
}

impl<'a> Merge<'a> {
    fn new(mut sources: Vec<Source<'a>>) -> Result<Merge<'a>, RebuildError> {
        let mut heap = BinaryHeap::with_capacity(sources.len());
        let mut values = vec![0; sources.len()];
        for (i, source) in sources.iter_mut().enumerate() {
            if let Some(cell) = source.next_cell() {
                let (key, value) = cell?;
                values[i] = value;
                heap.push(Reverse((key, i)));
            }
        }
        Ok(Merge {
            sources,
            heap,
            values,
        })
    }
}

impl Iterator for Merge<'_> {
    type Item = Cell;

    fn next(&mut self) -> Option<Cell> {
        let Reverse((key, i)) = self.heap.pop()?;
        let value = self.values[i];
        match self.sources[i].next_cell() {
            Some(Ok((next, v))) => {
                self.values[i] = v;
                self.heap.push(Reverse((next, i)));
            }
            Some(Err(e)) => return Some(Err(e)),
            None => {}
        }
        Some(Ok((key, value)))
    }
}

/// Adds up the adjacent equal keys of a sorted stream.
struct Summed<I: Iterator> {
    cells: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = Cell>> Summed<I> {
    fn new(cells: I) -> Summed<I> {
        Summed {
            cells: cells.peekable(),
        }
    }
}

impl<I: Iterator<Item = Cell>> Iterator for Summed<I> {
    type Item = Cell;

    fn next(&mut self) -> Option<Cell> {
        let (key, mut sum) = match self.cells.next()? {
            Ok(cell) => cell,
            Err(e) => return Some(Err(e)),
        };
        while let Some(Ok((next, value))) = self.cells.peek() {
            if *next != key {
                break;
            }
            sum += value;
            self.cells.next();
        }
        Some(Ok((key, sum)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn key(dims: u32, day: u32, metric: Metric) -> CellKey {
        CellKey {
            dims,
            day: NaiveDate::from_ymd_opt(2024, 1, day).unwrap(),
            metric,
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("motcua-spill-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A sorted, summed vector of cells, as `CellSums::compact` leaves it.
    fn sorted(cells: &[(CellKey, i128)]) -> Vec<(CellKey, i128)> {
        let mut sums = BTreeMap::new();
        for (k, v) in cells {
            *sums.entry(*k).or_insert(0) += v;
        }
        sums.into_iter().collect()
    }

    /// Adds up a merged stream per key.
    fn total(cells: impl Iterator<Item = Cell>) -> BTreeMap<CellKey, i128> {
        let mut out = BTreeMap::new();
        let mut last = None;
        for cell in cells {
            let (k, v) = cell.unwrap();
            assert!(last <= Some(k), "sorted: {last:?} then {k:?}");
            last = Some(k);
            *out.entry(k).or_insert(0) += v;
        }
        out.retain(|_, v| *v != 0);
        out
    }

    #[test]
    fn records_round_trip_every_metric_day_and_i128() {
        for (i, metric) in Metric::ALL.iter().enumerate() {
            for value in [1, -1, i128::MAX, i128::MIN, 1 << 70] {
                let k = CellKey {
                    dims: u32::MAX - i as u32,
                    day: NaiveDate::from_ymd_opt(1900 + i as i32, 12, 31).unwrap(),
                    metric: *metric,
                };
                assert_eq!(decode(&encode(k, value)), Some((k, value)));
            }
        }
        let mut bad = encode(key(1, 1, Metric::ALL[0]), 5);
        bad[8] = u8::MAX;
        assert_eq!(decode(&bad), None);
    }

    #[test]
    fn runs_of_every_share_merge_back_to_the_sums_however_many_there_are() {
        let base = scratch("merge");
        let metrics = [Metric::ALL[0], Metric::ALL[3]];
        let mut all = Vec::new();
        // Pseudo-random cells (a fixed LCG), spilled as many runs of 3 shares, with a merge
        // width of 4 so that the oldest runs are merged first, twice over.
        let mut seed = 12345u64;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let spill = Spill::new(base.clone(), 3).with_merge_width(4);
        for _ in 0..20 {
            let run: Vec<_> = (0..50)
                .map(|_| {
                    let k = key(
                        next(40) as u32,
                        1 + next(28) as u32,
                        metrics[next(2) as usize],
                    );
                    (k, next(7) as i128 - 3)
                })
                .collect();
            all.extend_from_slice(&run);
            spill.write_partitioned(&sorted(&run)).unwrap();
        }
        let last = sorted(&[(key(5, 2, metrics[0]), 100), (key(39, 28, metrics[1]), -7)]);
        all.extend_from_slice(&last);
        let mut merged = BTreeMap::new();
        for share in 0..3 {
            assert!(spill.has_runs(share).unwrap());
            let share_last: Vec<_> = last
                .iter()
                .copied()
                .filter(|(k, _)| share_of(k.dims, 3) == share)
                .collect();
            for (k, v) in total(spill.merged(share, &share_last).unwrap()) {
                assert_eq!(share_of(k.dims, 3), share, "{k:?} in its share only");
                assert!(merged.insert(k, v).is_none());
            }
            assert!(
                spill.share_runs(share).unwrap().len() < 4,
                "merged down to the width"
            );
        }
        let mut expected: BTreeMap<_, _> = sorted(&all).into_iter().collect();
        expected.retain(|_, v| *v != 0);
        assert_eq!(merged, expected);
        let dir = spill.dir.lock().unwrap().clone().unwrap();
        assert!(dir.starts_with(&base) && dir.exists());
        drop(spill);
        assert!(!dir.exists(), "the runs are removed with the spill");
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn the_first_spill_removes_the_runs_of_killed_rebuilds_and_nothing_else() {
        let base = scratch("stale");
        // pid_max is at most 2^22: this process cannot exist.
        let stale = base.join(format!("{DIR_PREFIX}999999999-123-0"));
        let ours = base.join(format!("{DIR_PREFIX}{}-123-0", std::process::id()));
        let other = base.join(format!("{DIR_PREFIX}999999999-x"));
        let unrelated = base.join("motcua-rebuild-test-999999999-1-0");
        for dir in [&stale, &ours, &other, &unrelated] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("run-000000"), b"x").unwrap();
        }
        assert_eq!(rebuild_pid("motcua-rebuild-42-7-0"), Some(42));
        assert_eq!(rebuild_pid("motcua-rebuild-42-7"), None);
        assert_eq!(rebuild_pid("motcua-rebuild-test-42-7-0"), None);
        let spill = Spill::new(base.clone(), 1);
        // Nothing is removed before a spill needs the place.
        assert!(stale.exists());
        spill
            .write_share(0, &[(key(1, 1, Metric::ALL[0]), 1)])
            .unwrap();
        assert!(!stale.exists(), "a killed rebuild's runs are removed");
        for kept in [&ours, &other, &unrelated] {
            assert!(kept.exists(), "{} kept", kept.display());
        }
        drop(spill);
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_spill_that_writes_nothing_makes_no_directory() {
        let base = scratch("nothing");
        let spill = Spill::new(base.clone(), 2);
        assert!(
            !spill
                .write_partitioned(&[(key(1, 1, Metric::ALL[0]), 0)])
                .unwrap()
        );
        assert!(!spill.has_runs(0).unwrap() && !spill.has_runs(1).unwrap());
        drop(spill);
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_damaged_run_stops_the_merge_with_its_name() {
        let base = scratch("damaged");
        let spill = Spill::new(base.clone(), 1);
        let cells = sorted(&[
            (key(1, 1, Metric::ALL[0]), 1),
            (key(2, 1, Metric::ALL[0]), 2),
        ]);
        spill.write_share(0, &cells).unwrap();
        let path = spill.share_runs(0).unwrap()[0].clone();
        // Cut short.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..RECORD_BYTES + 3]).unwrap();
        let err = spill.merged(0, &[]).unwrap().find_map(Result::err).unwrap();
        assert!(err.to_string().contains("cut short"), "{err}");
        // Out of order.
        let mut swapped = bytes[RECORD_BYTES..].to_vec();
        swapped.extend_from_slice(&bytes[..RECORD_BYTES]);
        std::fs::write(&path, &swapped).unwrap();
        let err = spill.merged(0, &[]).unwrap().find_map(Result::err).unwrap();
        assert!(err.to_string().contains("out of order"), "{err}");
        // Gone.
        std::fs::remove_file(&path).unwrap();
        let Err(RebuildError::Spill { path: named, .. }) = spill.merged(0, &[]) else {
            panic!("a missing run is a spill error");
        };
        assert_eq!(named, path);
        drop(spill);
        std::fs::remove_dir_all(base).unwrap();
    }
}
