//! `bytepair._native`: thin PyO3 bindings over `bytepair-core`. Each file converts arguments,
//! detaches from the interpreter, calls the core and converts results back.
use pyo3::prelude::*;

mod corpus;
mod embed;
mod encoding;
mod errors;
mod ints;
mod text;
mod tokens;
mod train;

#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    encoding::register(m)?;
    corpus::register(m)?;
    train::register(m)?;
    embed::register(m)?;
    Ok(())
}
