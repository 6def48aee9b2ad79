//! Session reports: the learning summary (pure aggregation) and its PDF rendering. The
//! report email is built from the same summary.

pub mod pdf;
pub mod summary;
pub mod week;

pub use summary::{EventRecord, Mark, SessionRecord, SessionSummary, summarize};
