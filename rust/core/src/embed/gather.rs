//! Fused gather + pool: bags of token ids -> one pooled (optionally normalised) row per bag.
//!
//! Why it is fast: `T[ids].mean(1)` in numpy first copies every selected row into a fresh
//! [N, D] array (page faults plus a full write and re-read), then reduces it. Here each bag's
//! accumulator is its own output row, which stays in L1 while the table rows stream past it once,
//! twelve at a time (twelve streams for the hardware prefetcher; the next group's starts are
//! requested ahead), and bags run in parallel (the calling thread works too and never waits for a
//! pool thread that has not started). The first row of a bag is stored rather than added, so the
//! output is never cleared first.
use super::simd::{self, Elem, Level, RowOp};
use super::{Bags, Id, Pool};
use crate::{Error, Result};

/// How many rows of a bag are read at once. Rows are random, so each is a separate stream for
/// the hardware prefetcher, and the more streams run at once the more of memory's latency they
/// hide. Measured here (C model of the loop, [50257, 768] f32 table, caches evicted first, 41
/// rounds): one thread 2.13 ms reading 4 rows at once, 1.71 ms for 8, 1.53 ms for 12, 1.54 ms for
/// 16; two threads 1.49 ms for 4, 1.37 ms for 8, 1.31 ms for 12. Through Python, old and new
/// builds alternating in one process: 1.88-2.20 ms with four rows at once, 1.25-1.34 ms with 12.
const GROUP: usize = 12;
/// Below this many multiply-adds the work runs on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 16;

/// Checks ids against the table and returns them as `usize`.
pub(crate) fn check_ids<I: Id>(ids: &[I], rows: usize) -> Result<()> {
    for (pos, &id) in ids.iter().enumerate() {
        let v = id.as_i64();
        if v < 0 || v as u64 >= rows as u64 {
            return Err(Error::Index(format!(
                "ids[{pos}] = {id} is out of range for a table of {rows} rows"
            )));
        }
    }
    Ok(())
}

/// Validates the bag layout and returns the bag boundaries (`B + 1` positions into `ids`).
fn bag_bounds(bags: &Bags<'_>, n: usize) -> Result<Vec<usize>> {
    match *bags {
        Bags::Fixed { bags, len } => {
            if bags.checked_mul(len) != Some(n) {
                return Err(Error::Value(format!(
                    "{bags} bags of {len} ids need {} ids, got {n}",
                    bags as u128 * len as u128
                )));
            }
            let mut out = super::try_zeroed::<usize>(bags.saturating_add(1), "the bag bounds")?;
            for (b, o) in out.iter_mut().enumerate() {
                *o = b * len;
            }
            Ok(out)
        }
        Bags::Offsets(off) => {
            let mut out = Vec::with_capacity(off.len() + 1);
            for (i, &o) in off.iter().enumerate() {
                if i == 0 && o != 0 {
                    return Err(Error::Value(format!("offsets[0] must be 0, got {o}")));
                }
                if o < 0 || o as u64 > n as u64 {
                    return Err(Error::Value(format!(
                        "offsets[{i}] = {o} is outside 0..={n} (the number of ids)"
                    )));
                }
                if i > 0 && o < off[i - 1] {
                    return Err(Error::Value(format!(
                        "offsets must be non-decreasing: offsets[{}] = {} > offsets[{i}] = {o}",
                        i - 1,
                        off[i - 1]
                    )));
                }
                out.push(o as usize);
            }
            if off.is_empty() && n > 0 {
                return Err(Error::Value(format!(
                    "offsets is empty but there are {n} ids"
                )));
            }
            out.push(n);
            Ok(out)
        }
    }
}

/// Row `id` of a row-major table of `rows` rows of `dim` values.
///
/// The ids were checked ([`check_ids`]), but they live in a caller's array, which another
/// thread may write to meanwhile (numpy does not stop it): an id out of range then reads row 0
/// instead of panicking.
#[inline(always)]
fn table_row<E, I: Id>(table: &[E], dim: usize, rows: usize, id: I) -> &[E] {
    let id = id.as_i64() as u64;
    let id = if id < rows as u64 { id as usize } else { 0 };
    &table[id * dim..id * dim + dim]
}

/// Pools the rows of one bag into `out` (its output row).
#[inline]
pub(crate) fn pool_bag<E: Elem, I: Id>(
    lv: Level,
    table: &[E],
    dim: usize,
    ids: &[I],
    weights: Option<&[f32]>,
    pool: Pool,
    normalize: bool,
    out: &mut [f32],
) {
    if ids.is_empty() {
        out.fill(0.0);
        return;
    }
    let rows = table.len() / dim.max(1);
    let row = |j: usize| table_row(table, dim, rows, ids[j]);
    let fold = if pool == Pool::Max {
        RowOp::Max
    } else {
        RowOp::Add
    };
    let w = |j: usize| weights.map_or(1.0, |w| w[j]);
    let n = ids.len();
    // Row 0 is stored alone, then groups start at row 1: prefetch the first group too.
    for j in 0..(GROUP + 1).min(n) {
        simd::prefetch_row_start(row(j));
    }
    simd::row_op(lv, RowOp::Set, out, row(0), w(0));
    let mut j = 1;
    while j + GROUP <= n {
        // The next group's rows are requested before this group's loads: their first lines, and
        // the first line after each 4 KB boundary, where the hardware prefetcher stops. Requests
        // for every line of the next rows were no faster (they wait for the same fill buffers).
        for k in j + GROUP..(j + 2 * GROUP).min(n) {
            simd::prefetch_row_start(row(k));
        }
        simd::rows_op::<E, GROUP>(
            lv,
            fold,
            out,
            std::array::from_fn(|g| row(j + g)),
            std::array::from_fn(|g| w(j + g)),
        );
        j += GROUP;
    }
    while j + 4 <= n {
        simd::rows_op::<E, 4>(
            lv,
            fold,
            out,
            std::array::from_fn(|g| row(j + g)),
            std::array::from_fn(|g| w(j + g)),
        );
        j += 4;
    }
    while j < n {
        simd::row_op(lv, fold, out, row(j), w(j));
        j += 1;
    }
    let wsum: f32 = weights.map_or(0.0, |w| w.iter().sum());
    if pool == Pool::Mean {
        let den = if weights.is_some() {
            wsum
        } else {
            ids.len() as f32
        };
        if den == 0.0 {
            out.fill(0.0);
        } else if (1.0 / den).is_finite() {
            simd::scale(out, 1.0 / den);
        } else {
            // Weights summing to a subnormal value: the reciprocal would overflow.
            out.iter_mut().for_each(|v| *v /= den);
        }
    }
    if normalize {
        simd::normalize(lv, out);
    }
}

/// Gathers rows of `table` ([`rows`, `dim`], row-major) for `ids` and pools them per bag.
///
/// Returns `[B, dim]` row-major (`[ids.len(), dim]` for [`Pool::None`]).
///
/// - Empty bags give zero rows for every pool (as torch's `EmbeddingBag` does, max included).
/// - `weights` (one per id) scale each row before pooling; `Mean` with weights is the weighted
///   average `sum(w * row) / sum(w)`, and zeros where the weights sum to 0.
/// - `Max` ignores NaN like `np.fmax` (NaN only where every row is NaN); other pools propagate it.
/// - `normalize` scales each output row to unit L2 norm; zero rows stay zero.
pub fn gather<E: Elem, I: Id>(
    table: &[E],
    rows: usize,
    dim: usize,
    ids: &[I],
    bags: Bags<'_>,
    pool: Pool,
    weights: Option<&[f32]>,
    normalize: bool,
) -> Result<Vec<f32>> {
    gather_at(
        simd::level(),
        table,
        rows,
        dim,
        ids,
        bags,
        pool,
        weights,
        normalize,
    )
}

pub(crate) fn gather_at<E: Elem, I: Id>(
    lv: Level,
    table: &[E],
    rows: usize,
    dim: usize,
    ids: &[I],
    bags: Bags<'_>,
    pool: Pool,
    weights: Option<&[f32]>,
    normalize: bool,
) -> Result<Vec<f32>> {
    if rows.checked_mul(dim) != Some(table.len()) {
        return Err(Error::Value(format!(
            "table has {} values, not {rows} x {dim}",
            table.len()
        )));
    }
    if let Some(w) = weights {
        if w.len() != ids.len() {
            return Err(Error::Value(format!(
                "weights has {} values but there are {} ids",
                w.len(),
                ids.len()
            )));
        }
    }
    let zeros = |out_rows: usize| {
        let size = out_rows.checked_mul(dim).ok_or_else(|| {
            Error::TooLarge(format!(
                "an output of {out_rows} x {dim} values is too large"
            ))
        })?;
        super::try_zeroed::<f32>(size, "the output")
    };
    if let (Bags::Fixed { bags: b, len: 0 }, true) = (bags, ids.is_empty()) {
        // Every bag is empty (a [B, 0] id array, B as large as the caller likes): zero rows.
        return zeros(if pool == Pool::None { 0 } else { b });
    }
    let bounds = bag_bounds(&bags, ids.len())?;
    check_ids(ids, rows)?;
    let out_rows = if pool == Pool::None {
        ids.len()
    } else {
        bounds.len() - 1
    };
    let mut out = zeros(out_rows)?;
    if dim == 0 || out_rows == 0 {
        return Ok(out);
    }
    let parallel = ids.len() * dim >= PARALLEL_MIN_WORK;
    if pool == Pool::None {
        // Every id is its own output row: gather (and weight / normalise) in chunks of rows,
        // with the starts of the rows a group ahead requested (as in `pool_bag`).
        const CHUNK: usize = 64;
        let rows = table.len() / dim.max(1);
        let row = |j: usize| table_row(table, dim, rows, ids[j]);
        let work = |c: usize, chunk: &mut &mut [f32]| {
            let first = c * CHUNK;
            for j in first..(first + GROUP).min(ids.len()) {
                simd::prefetch_row_start(row(j));
            }
            for (r, o) in chunk.chunks_exact_mut(dim).enumerate() {
                let j = first + r;
                if j + GROUP < ids.len() {
                    simd::prefetch_row_start(row(j + GROUP));
                }
                let w = weights.map_or(1.0, |w| w[j]);
                simd::row_op(lv, RowOp::Set, o, row(j), w);
                if normalize {
                    simd::normalize(lv, o);
                }
            }
        };
        let mut chunks: Vec<&mut [f32]> = out.chunks_mut(CHUNK * dim).collect();
        run(parallel, &mut chunks, work);
        return Ok(out);
    }
    let work = |b: usize, o: &mut &mut [f32]| {
        let (s, e) = (bounds[b], bounds[b + 1]);
        pool_bag(
            lv,
            table,
            dim,
            &ids[s..e],
            weights.map(|w| &w[s..e]),
            pool,
            normalize,
            o,
        );
    };
    let mut rows: Vec<&mut [f32]> = out.chunks_mut(dim).collect();
    run(parallel, &mut rows, work);
    Ok(out)
}

/// Runs `work` on every output part: on the calling thread and the pool's threads, parts claimed
/// one at a time (a bag's rows are tens of microseconds of work), or on the calling thread alone.
fn run(parallel: bool, parts: &mut [&mut [f32]], work: impl Fn(usize, &mut &mut [f32]) + Sync) {
    if parallel {
        // Interrupted (Ctrl-C): the caller drops the result.
        let _ = crate::parallel::for_each_mut(&crate::parallel::pool(0), parts, 1, work);
    } else {
        for (i, p) in parts.iter_mut().enumerate() {
            work(i, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::testutil::{assert_close, randn};
    use half::f16;

    /// The obviously-correct reference: materialise, then reduce, in f64.
    fn reference(
        table: &[f32],
        dim: usize,
        ids: &[i64],
        bounds: &[usize],
        pool: Pool,
        w: Option<&[f32]>,
        normalize: bool,
    ) -> Vec<f32> {
        let row = |j: usize| &table[ids[j] as usize * dim..][..dim];
        let wt = |j: usize| w.map_or(1.0, |w| w[j] as f64);
        let mut out = vec![];
        let groups: Vec<(usize, usize)> = if pool == Pool::None {
            (0..ids.len()).map(|j| (j, j + 1)).collect()
        } else {
            bounds.windows(2).map(|b| (b[0], b[1])).collect()
        };
        for (s, e) in groups {
            let mut acc = vec![0f64; dim];
            if s < e {
                for c in 0..dim {
                    let vals: Vec<f64> = (s..e).map(|j| wt(j) * row(j)[c] as f64).collect();
                    acc[c] = match pool {
                        Pool::Max => vals.iter().cloned().fold(f64::NAN, f64::max),
                        Pool::Mean => {
                            let den: f64 = if w.is_some() {
                                (s..e).map(wt).sum()
                            } else {
                                (e - s) as f64
                            };
                            if den == 0.0 {
                                0.0
                            } else {
                                vals.iter().sum::<f64>() / den
                            }
                        }
                        _ => vals.iter().sum(),
                    };
                }
            }
            if normalize {
                let n: f64 = acc.iter().map(|v| v * v).sum::<f64>().sqrt();
                if n > 0.0 {
                    acc.iter_mut().for_each(|v| *v /= n);
                }
            }
            out.extend(acc.iter().map(|&v| v as f32));
        }
        out
    }

    #[test]
    fn all_pools_levels_and_dtypes_match_reference() {
        for &(rows, dim) in &[(50usize, 768usize), (13, 5), (40, 33)] {
            let table = randn(rows * dim, 7);
            let table16: Vec<f16> = table.iter().map(|&v| f16::from_f32(v)).collect();
            let table16_f32: Vec<f32> = table16.iter().map(|v| v.to_f32()).collect();
            let ids: Vec<i64> = (0..300).map(|i| (i * 7919 % rows) as i64).collect();
            let offsets: Vec<i64> = vec![0, 3, 3, 50, 51, 200, 300];
            let bounds: Vec<usize> = offsets.iter().map(|&o| o as usize).chain([300]).collect();
            let w: Vec<f32> = randn(300, 3);
            for lv in Level::available() {
                for pool in [Pool::Mean, Pool::Sum, Pool::Max, Pool::None] {
                    for weights in [None, Some(&w[..])] {
                        for normalize in [false, true] {
                            let want =
                                reference(&table, dim, &ids, &bounds, pool, weights, normalize);
                            let got = gather_at(
                                lv,
                                &table,
                                rows,
                                dim,
                                &ids,
                                Bags::Offsets(&offsets),
                                pool,
                                weights,
                                normalize,
                            )
                            .unwrap();
                            assert_close(
                                &got,
                                &want,
                                1e-5,
                                1e-4,
                                &format!("{lv:?} {pool:?} {normalize}"),
                            );
                            let want16 = reference(
                                &table16_f32,
                                dim,
                                &ids,
                                &bounds,
                                pool,
                                weights,
                                normalize,
                            );
                            let got16 = gather_at(
                                lv,
                                &table16,
                                rows,
                                dim,
                                &ids,
                                Bags::Offsets(&offsets),
                                pool,
                                weights,
                                normalize,
                            )
                            .unwrap();
                            assert_close(
                                &got16,
                                &want16,
                                1e-5,
                                1e-4,
                                &format!("f16 {lv:?} {pool:?}"),
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn max_ignores_nan_in_the_four_row_kernels_at_every_level() {
        // Bags of 9 rows (one stored, then two groups of four) of 19 values (vector body plus
        // tail at 8 and 16 lanes), with NaN in the first row, inside groups, and whole columns.
        let (rows, dim) = (12usize, 19usize);
        let mut table = randn(rows * dim, 5);
        for (r, c) in [(0, 0), (0, 9), (3, 1), (4, 17), (5, 9), (8, 18), (11, 2)] {
            table[r * dim + c] = f32::NAN;
        }
        for r in 0..rows {
            table[r * dim + 3] = f32::NAN; // every row NaN in column 3
        }
        let ids: Vec<i64> = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 3, 5, 8, 4, 10, 9, 0, 2];
        let bounds = [0usize, 9, 18];
        let want = reference(&table, dim, &ids, &bounds, Pool::Max, None, false);
        for lv in Level::available() {
            let got = gather_at(
                lv,
                &table,
                rows,
                dim,
                &ids,
                Bags::Fixed { bags: 2, len: 9 },
                Pool::Max,
                None,
                false,
            )
            .unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g.is_nan() && w.is_nan()) || g == w,
                    "{lv:?} value {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn fixed_bags_and_id_types() {
        let (rows, dim) = (1000, 64);
        let table = randn(rows * dim, 1);
        let ids64: Vec<i64> = (0..32 * 16).map(|i| (i * 31 % rows) as i64).collect();
        let ids32: Vec<u32> = ids64.iter().map(|&v| v as u32).collect();
        let bounds: Vec<usize> = (0..=32).map(|b| b * 16).collect();
        let want = reference(&table, dim, &ids64, &bounds, Pool::Mean, None, true);
        let got = gather(
            &table,
            rows,
            dim,
            &ids32,
            Bags::Fixed { bags: 32, len: 16 },
            Pool::Mean,
            None,
            true,
        )
        .unwrap();
        assert_close(&got, &want, 1e-5, 1e-4, "fixed");
    }

    #[test]
    fn large_parallel_matches() {
        let (rows, dim) = (5000, 96);
        let table = randn(rows * dim, 5);
        let ids: Vec<i64> = (0..20000).map(|i| (i * 104729 % rows) as i64).collect();
        let offsets: Vec<i64> = (0..100).map(|b| b * 200).collect();
        let bounds: Vec<usize> = (0..=100).map(|b| b * 200).collect();
        let want = reference(&table, dim, &ids, &bounds, Pool::Sum, None, false);
        let got = gather(
            &table,
            rows,
            dim,
            &ids,
            Bags::Offsets(&offsets),
            Pool::Sum,
            None,
            false,
        )
        .unwrap();
        assert_close(&got, &want, 1e-4, 1e-4, "parallel");
    }

    #[test]
    fn max_ignores_nan_and_empty_bags_are_zero() {
        let mut table = vec![1.0f32, 2.0, 3.0, f32::NAN, -5.0, f32::NAN];
        let got = gather(
            &table,
            3,
            2,
            &[0i64, 1, 2],
            Bags::Offsets(&[0, 0]),
            Pool::Max,
            None,
            false,
        )
        .unwrap();
        assert_eq!(&got[..2], &[0.0, 0.0]);
        assert_eq!(got[2], 3.0);
        assert_eq!(got[3], 2.0);
        table[0] = f32::NAN;
        let got = gather(
            &table,
            3,
            2,
            &[0i64, 1],
            Bags::Fixed { bags: 1, len: 2 },
            Pool::Sum,
            None,
            false,
        )
        .unwrap();
        assert!(got[0].is_nan());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let t = vec![0f32; 10];
        let e = |r: Result<Vec<f32>>| r.expect_err("error").to_string();
        assert!(e(gather(
            &t,
            5,
            2,
            &[5i64],
            Bags::Offsets(&[0]),
            Pool::Sum,
            None,
            false
        ))
        .contains("out of range"));
        assert!(e(gather(
            &t,
            5,
            2,
            &[-1i64],
            Bags::Offsets(&[0]),
            Pool::Sum,
            None,
            false
        ))
        .contains("-1"));
        assert!(e(gather(
            &t,
            5,
            2,
            &[0i64, 1],
            Bags::Offsets(&[0, 2, 1]),
            Pool::Sum,
            None,
            false
        ))
        .contains("non-decreasing"));
        assert!(e(gather(
            &t,
            5,
            2,
            &[0i64],
            Bags::Offsets(&[1]),
            Pool::Sum,
            None,
            false
        ))
        .contains("offsets[0]"));
        assert!(e(gather(
            &t,
            5,
            2,
            &[0i64],
            Bags::Offsets(&[0, 3]),
            Pool::Sum,
            None,
            false
        ))
        .contains("outside"));
        assert!(e(gather(
            &t,
            5,
            2,
            &[0i64],
            Bags::Offsets(&[0]),
            Pool::Sum,
            Some(&[1.0, 2.0]),
            false
        ))
        .contains("weights"));
        assert!(e(gather(
            &t,
            4,
            2,
            &[0i64],
            Bags::Offsets(&[0]),
            Pool::Sum,
            None,
            false
        ))
        .contains("table"));
        assert!(matches!(
            gather(
                &t,
                5,
                2,
                &[7u32],
                Bags::Fixed { bags: 1, len: 1 },
                Pool::Max,
                None,
                false
            ),
            Err(Error::Index(_))
        ));
    }
}
