//! Job slots as cgroups (v2, v1, or none).

mod pool;

pub use pool::*;
