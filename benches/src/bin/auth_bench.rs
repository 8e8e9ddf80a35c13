//! What checking a Cosmos master-key signature costs a request, next to a baseline measured in
//! the same run: parsing a 1 KiB item with serde_json (which every write does anyway).
//!
//! `cargo run --release -p converge-benches --bin auth-bench`

use converge_server::cosmos::auth::{MasterKey, resource_of};
use std::hint::black_box;
use std::time::{Instant, SystemTime};

const ROUNDS: u32 = 200_000;
const KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

fn per_call(f: impl Fn()) -> f64 {
    for _ in 0..ROUNDS / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS)
}

fn main() {
    let key = MasterKey::from_base64(KEY).expect("base64 key");
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now);
    let path = "/dbs/shop/colls/carts/docs/cart-000042";
    let (ty, link) = resource_of(path);
    let header = key.authorization("GET", path, &date);
    key.verify(&header, "GET", &ty, &link, &date, now)
        .expect("the signature verifies");
    let item = serde_json::json!({
        "id": "cart-000042", "pk": "alice", "pad": "x".repeat(1000),
    })
    .to_string();

    let verify = per_call(|| {
        let (ty, link) = resource_of(black_box(path));
        black_box(key.verify(black_box(&header), "GET", &ty, &link, &date, now)).ok();
    });
    let parse = per_call(|| {
        black_box(serde_json::from_str::<serde_json::Value>(black_box(&item)).ok());
    });
    println!("signature check (path to verdict): {verify:.2} µs per request");
    println!("baseline, serde_json parse of a 1 KiB item: {parse:.2} µs");
    println!("ratio: {:.2}×", verify / parse);
}
