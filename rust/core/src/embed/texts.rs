//! Static text embeddings (model2vec style): tokenize, gather, pool and normalise in one call.
//!
//! Why it is fast: no Python list of ids is ever built. Texts are split across threads; each
//! thread tokenizes into one reused buffer and pools straight into the text's output row.
use super::gather::pool_bag;
use super::simd::{self, Elem};
use super::Pool;
use crate::{CoreBpe, Error, Result};
use rayon::prelude::*;

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
    let mut out = vec![0f32; texts.len() * dim];
    if dim == 0 || texts.is_empty() {
        // Still tokenize, so that un-encodable input is reported the same way.
        for t in texts {
            bpe.encode_ordinary(t)?;
        }
        return Ok(out);
    }
    let one = |buf: &mut Vec<u32>, (i, (row, text)): (usize, (&mut [f32], &&str))| -> Result<()> {
        buf.clear();
        bpe.encode_ordinary_into(text, buf)?;
        if let Some(&bad) = buf.iter().find(|&&t| t as usize >= rows) {
            return Err(Error::Index(format!(
                "texts[{i}] has token id {bad}, out of range for a table of {rows} rows"
            )));
        }
        pool_bag(lv, table, dim, buf, None, pool, normalize, row);
        Ok(())
    };
    crate::parallel::pool(0).install(|| {
        out.par_chunks_mut(dim)
            .zip(texts.par_iter())
            .enumerate()
            .with_max_len(4)
            .try_for_each_init(Vec::new, one)
    })?;
    Ok(out)
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
}
