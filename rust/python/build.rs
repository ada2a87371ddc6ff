//! Sets PyO3's interpreter cfgs (`Py_LIMITED_API`, `PyPy`, ...) for this crate too, so that code
//! reading CPython's string layout (`text.rs`) is left out where that layout is not available.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
