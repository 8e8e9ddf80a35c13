//! Answers bytes that are not JSON: `invalid output: not JSON`.

/// Ignores the input.
pub fn resolve(_input: &[u8]) -> Vec<u8> {
    b"pick the first one".to_vec()
}

converge_udf_sdk::resolver!(raw: resolve);
