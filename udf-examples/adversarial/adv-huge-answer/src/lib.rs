//! Answers a merge larger than the 4 MiB output limit: `invalid output: too large`.

/// A 5 MiB answer (built by doubling, which costs little fuel).
pub fn resolve(_input: &[u8]) -> Vec<u8> {
    let mut out = br#"{"merge":{"id":"x","pad":""#.to_vec();
    out.extend_from_slice(&b"a".repeat(5 << 20));
    out.extend_from_slice(br#""}}"#);
    out
}

converge_udf_sdk::resolver!(raw: resolve);
