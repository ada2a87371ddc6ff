//! Static text embeddings (model2vec style): tokenize, gather, pool and normalise in one call.
//!
//! Why it is fast: no Python list of ids is ever built. Texts are split across threads; each
//! thread tokenizes into one reused buffer and pools straight into the text's output row.
use super::gather::pool_bag;
use super::simd::{self, Elem};
use super::Pool;
use crate::{CoreBpe, Error, Result};

/// Embeds each text as the pooled rows of its ordinary (no special tokens) token ids.
///
/// `table` is [`rows`, `dim`] row-major. Returns `[texts.len(), dim]`. An empty text gives a zero
/// row. A token id `>= rows` is an `Index` error. `Pool::None` is a `Value` error.
pub fn embed_texts<E: Elem>(
    bpe: &CoreBpe,
    table: &[E],
    rows: usize,
    dim: usize,
    texts: &[&str],
    pool: Pool,
    normalize: bool,
) -> Result<Vec<f32>> {
    if pool == Pool::None {
        return Err(Error::Value(
            "embed_texts needs pool 'mean', 'sum' or 'max'".into(),
        ));
    }
    if rows.checked_mul(dim) != Some(table.len()) {
        return Err(Error::Value(format!(
            "table has {} values, not {rows} x {dim}",
            table.len()
        )));
    }
    let lv = simd::level();
    let size = texts.len().checked_mul(dim).ok_or_else(|| {
        Error::TooLarge(format!(
            "an output of {} x {dim} values is too large",
            texts.len()
        ))
    })?;
    let mut out = super::try_zeroed::<f32>(size, "the output")?;
    if dim == 0 || texts.is_empty() {
        // Still tokenize, so that un-encodable input and out-of-range ids are reported the same
        // way.
        for (i, t) in texts.iter().enumerate() {
            if let Some(&bad) = bpe
                .encode_ordinary(t)?
                .iter()
                .find(|&&t| t as usize >= rows)
            {
                return Err(out_of_range(i, bad, rows));
            }
        }
        return Ok(out);
    }
    let one = |buf: &mut Vec<u32>, (i, (row, text)): (usize, (&mut [f32], &&str))| -> Result<()> {
        buf.clear();
        bpe.encode_ordinary_into(text, buf)?;
        if let Some(&bad) = buf.iter().find(|&&t| t as usize >= rows) {
            return Err(out_of_range(i, bad, rows));
        }
        pool_bag(lv, table, dim, buf, None, pool, normalize, row);
        Ok(())
    };
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // The error of the earliest failing text, as a sequential loop would report it.
    let first_err: std::sync::Mutex<Option<(usize, Error)>> = std::sync::Mutex::new(None);
    let mut rows_out: Vec<&mut [f32]> = out.chunks_mut(dim).collect();
    // Interrupted (Ctrl-C) leaves rows unfilled: the caller drops the result.
    let err_at = std::sync::atomic::AtomicUsize::new(usize::MAX);
    let _ = crate::parallel::for_each_mut(&crate::parallel::pool(0), &mut rows_out, 4, |i, row| {
        if i > err_at.load(std::sync::atomic::Ordering::Relaxed) {
            return; // an earlier text failed: the call fails with its error
        }
        let r = BUF.with(|b| one(&mut b.borrow_mut(), (i, (&mut **row, &texts[i]))));
        if let Err(e) = r {
            err_at.fetch_min(i, std::sync::atomic::Ordering::Relaxed);
            let mut g = first_err.lock().unwrap_or_else(|e| e.into_inner());
            if g.as_ref().is_none_or(|(j, _)| i < *j) {
                *g = Some((i, e));
            }
        }
    });
    if let Some((_, e)) = first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(out)
}

/// The error for token id `bad` of `texts[i]`, beyond the table's `rows`.
fn out_of_range(i: usize, bad: u32, rows: usize) -> Error {
    Error::Index(format!(
        "texts[{i}] has token id {bad}, out of range for a table of {rows} rows"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::testutil::{assert_close, randn};
    use crate::embed::{gather, Bags};

    fn cl100k() -> CoreBpe {
        let v = crate::vocab::bundled("cl100k_base").unwrap();
        CoreBpe::new(v, crate::pretokenize::CL100K_PATTERN, vec![]).unwrap()
    }

    #[test]
    fn equals_encode_then_gather() {
        let bpe = cl100k();
        let (rows, dim) = (100_277, 16);
        let table = randn(rows * dim, 3);
        let texts: Vec<String> = (0..50)
            .map(|i| {
                format!(
                    "Document {i}: the quick brown fox jumps over {} lazy dogs. Ünïcödé 日本語 ",
                    i * 7
                )
                .repeat(i % 5)
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        for pool in [Pool::Mean, Pool::Sum, Pool::Max] {
            for normalize in [false, true] {
                let got = embed_texts(&bpe, &table, rows, dim, &refs, pool, normalize).unwrap();
                let mut ids: Vec<i64> = vec![];
                let mut offsets = vec![];
                for t in &refs {
                    offsets.push(ids.len() as i64);
                    ids.extend(bpe.encode_ordinary(t).unwrap().iter().map(|&x| x as i64));
                }
                let want = gather(
                    &table,
                    rows,
                    dim,
                    &ids,
                    Bags::Offsets(&offsets),
                    pool,
                    None,
                    normalize,
                )
                .unwrap();
                assert_close(&got, &want, 1e-6, 1e-5, &format!("{pool:?}"));
            }
        }
        // Empty text -> zero row.
        let got = embed_texts(&bpe, &table, rows, dim, &[""], Pool::Mean, true).unwrap();
        assert!(got.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn small_table_is_an_index_error() {
        let bpe = cl100k();
        let table = vec![0f32; 10 * 4];
        let r = embed_texts(&bpe, &table, 10, 4, &["hello world"], Pool::Mean, true);
        assert!(matches!(r, Err(Error::Index(_))));
        assert!(matches!(
            embed_texts(&bpe, &table, 10, 4, &["a"], Pool::None, true),
            Err(Error::Value(_))
        ));
    }

    #[test]
    fn an_output_too_large_is_an_error() {
        let bpe = cl100k();
        let texts = vec![""; 1024];
        for dim in [1usize << 40, usize::MAX / 2] {
            let r = embed_texts::<f32>(&bpe, &[], 0, dim, &texts, Pool::Mean, true);
            assert!(matches!(r, Err(Error::TooLarge(_))), "{dim}");
        }
    }

    #[test]
    fn the_earliest_failing_text_is_reported() {
        // "!" is token 0, inside a 10-row table; "hello" is not. Many texts so that the work is
        // spread over threads and later failures may well be found first.
        let bpe = cl100k();
        let table = vec![0f32; 10 * 4];
        let mut texts = vec!["!"; 4000];
        for i in [3999, 2500, 1234, 700] {
            texts[i] = "hello";
        }
        for _ in 0..5 {
            match embed_texts(&bpe, &table, 10, 4, &texts, Pool::Mean, true) {
                Err(Error::Index(m)) => assert!(m.starts_with("texts[700] "), "{m}"),
                other => panic!("{:?}", other.map(|v| v.len())),
            }
        }
    }
}
