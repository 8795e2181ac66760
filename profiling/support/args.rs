//! What the profiling programs share: reading `--name value` arguments and
//! taking medians.

/// The value after `name` on the command line, if any.
pub(crate) fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args();
    while let Some(a) = args.next() {
        if a == name {
            return args.next();
        }
    }
    None
}

/// The median of `v` (sorted in place); NaN when empty.
#[allow(dead_code)] // not every program takes medians
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
