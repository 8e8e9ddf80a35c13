//! Effective partition keys: the hex strings Cosmos DB hashes partition key values to, which the
//! SDKs send as `x-ms-start-epk`/`x-ms-end-epk` when they read the change feed of one partition
//! key (or of a feed range). converge keeps one physical range per container, so an effective
//! partition key only filters: an item is in `[start, end)` when its key's hash is.
//!
//! The hash is Cosmos's "version 2": MurmurHash3 x64 128-bit (seed 0) over the key's binary
//! encoding, its bytes reversed, the top two bits cleared, in upper-case hex. A hierarchical key
//! (`MultiHash`) concatenates the hash of each component, so a prefix of its components hashes to
//! a prefix of the full key's hash.

use serde_json::Value;

/// The effective partition key of a single-path key's value.
pub fn hash_v2(value: &Value) -> String {
    let mut bytes = Vec::new();
    encode(value, &mut bytes);
    hex_of(&bytes)
}

/// The effective partition key of a hierarchical key's components (all of them, or a prefix).
pub fn multi_hash(components: &[Value]) -> String {
    let mut out = String::with_capacity(32 * components.len());
    for c in components {
        let mut bytes = Vec::new();
        encode(c, &mut bytes);
        out.push_str(&hex_of(&bytes));
    }
    out
}

/// Whether an effective partition key lies in the SDK's `[start, end)` (hex strings, compared as
/// Cosmos compares them: as text, case-insensitively).
pub fn in_range(epk: &str, start: &str, end: &str) -> bool {
    let (e, s, x) = (
        epk.to_ascii_uppercase(),
        start.to_ascii_uppercase(),
        end.to_ascii_uppercase(),
    );
    e >= s && (x.is_empty() || e < x)
}

/// One component's binary encoding for hashing: a type marker, then the value (numbers as
/// little-endian doubles, strings as UTF-8 closed by 0xFF).
fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bool(true) => out.push(0x03),
        Value::Bool(false) => out.push(0x02),
        Value::Null => out.push(0x01),
        Value::Number(n) => {
            out.push(0x05);
            out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
        }
        Value::String(s) => {
            out.push(0x08);
            out.extend_from_slice(s.as_bytes());
            out.push(0xFF);
        }
        // `{}` is the SDKs' spelling of "no value at the path" (undefined).
        Value::Object(_) | Value::Array(_) => out.push(0x00),
    }
}

fn hex_of(bytes: &[u8]) -> String {
    let (h1, h2) = murmur3_x64_128(bytes, 0);
    // The 128-bit value's bytes (h1 then h2, each little-endian) reversed: h2 then h1, big-endian.
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&h2.to_be_bytes());
    b[8..].copy_from_slice(&h1.to_be_bytes());
    b[0] &= 0x3F;
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// MurmurHash3, x64 128-bit variant (Austin Appleby's public-domain algorithm).
fn murmur3_x64_128(data: &[u8], seed: u64) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let (mut h1, mut h2) = (seed, seed);
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let (a, b) = block.split_at(8);
        let k1 = u64::from_le_bytes(a.try_into().unwrap_or_default());
        let k2 = u64::from_le_bytes(b.try_into().unwrap_or_default());
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let word = |bytes: &[u8]| {
        bytes
            .iter()
            .enumerate()
            .fold(0u64, |k, (i, &x)| k ^ (u64::from(x) << (8 * i)))
    };
    if tail.len() > 8 {
        h2 ^= word(&tail[8..])
            .wrapping_mul(C2)
            .rotate_left(33)
            .wrapping_mul(C1);
    }
    if !tail.is_empty() {
        h1 ^= word(&tail[..tail.len().min(8)])
            .wrapping_mul(C1)
            .rotate_left(31)
            .wrapping_mul(C2);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Values computed by the Python SDK (`azure-cosmos` 4.17.1,
    /// `PartitionKey._get_epk_range_for_partition_key`).
    #[test]
    fn hashes_as_the_python_sdk_does() {
        for (v, epk) in [
            (json!("alice"), "35EAEE8D6020FFCABDE75797DFE27C34"),
            (json!(""), "32E9366E637A71B4E710384B2F4970A0"),
            (json!(42), "08E6D561F6FD951DCC25E7E4EA2884B5"),
            (json!(1.5), "35C5DDEB6C795D16A9963C73C54E97BC"),
            (json!(-7), "1B0AD9007F20B649B04248EBD09C9145"),
            (json!(true), "0E711127C5B5A8E4726AC6DD306A3E59"),
            (json!(false), "2FE1BE91E90A3439635E0E9E37361EF2"),
            (json!(null), "378867E4430E67857ACE5C908374FE16"),
            (json!("héllo"), "029ACA93BF00D120BC875CAD8F9A5F01"),
        ] {
            assert_eq!(hash_v2(&v), epk, "{v}");
        }
        assert_eq!(
            multi_hash(&[json!("acme"), json!("bob")]),
            "07EF3A153CC1F5F24E265206D86474BD01556D565333EA3D5AFFE64AA206EAB1"
        );
        assert_eq!(
            multi_hash(&[json!("acme")]),
            "07EF3A153CC1F5F24E265206D86474BD"
        );
    }

    #[test]
    fn long_keys_use_every_block_and_tail() {
        // 16-byte blocks and every tail length give distinct, stable hashes.
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..40 {
            assert!(seen.insert(hash_v2(&json!("x".repeat(n)))));
        }
    }

    #[test]
    fn ranges_are_half_open_and_prefixes_cover_their_keys() {
        let full = multi_hash(&[json!("acme"), json!("bob")]);
        let prefix = multi_hash(&[json!("acme")]);
        assert!(in_range(&full, &prefix, &format!("{prefix}FF")));
        assert!(!in_range(
            &multi_hash(&[json!("other"), json!("bob")]),
            &prefix,
            &format!("{prefix}FF")
        ));
        assert!(in_range("10", "10", "11"));
        assert!(!in_range("11", "10", "11"));
        assert!(in_range("AB", "", "FF"));
        assert!(in_range("ab", "AA", "AC"));
    }
}
