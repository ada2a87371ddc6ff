//! Sets PyO3's interpreter cfgs (`Py_LIMITED_API`, `PyPy`, ...) for this crate too, so that code
//! reading CPython's string layout (`text.rs`) is left out where that layout is not available;
//! and `immortal_ints` where the interpreter makes objects immortal by a reference count of
//! `UINT_MAX` (CPython 3.12 and 3.13) or by the immortal flag and `3 << 30` (3.14 and 3.15),
//! with the GIL, on 64-bit targets; see `ints.rs`.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    println!("cargo:rustc-check-cfg=cfg(immortal_ints)");
    let cfg = pyo3_build_config::get();
    let v = cfg.version();
    let cpython = cfg.implementation() == pyo3_build_config::PythonImplementation::CPython;
    let gil = !cfg
        .build_flags()
        .0
        .contains(&pyo3_build_config::BuildFlag::Py_GIL_DISABLED);
    #[allow(deprecated)] // the stable ABI in any of its forms
    let abi3 = cfg.abi3() || std::env::var_os("CARGO_FEATURE_ABI3").is_some();
    let wide = std::env::var("CARGO_CFG_TARGET_POINTER_WIDTH").as_deref() == Ok("64");
    if cpython
        && !abi3
        && gil
        && wide
        && (v.major, v.minor) >= (3, 12)
        && (v.major, v.minor) < (3, 16)
    {
        println!("cargo:rustc-cfg=immortal_ints");
    }
}
