//! The `ChainReader` port: a chain without reorgs.

/// A `MockChainReader` for a chain without reorgs: every job's creating log is canonical.
pub fn canonical_reader() -> crate::domain::dal::MockChainReader {
    let mut reader = crate::domain::dal::MockChainReader::new();
    reader.expect_job_is_canonical().returning(|_| Ok(true));
    reader
}
