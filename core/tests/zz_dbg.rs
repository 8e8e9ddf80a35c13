use converge_core::{ResolverLimits, WasmResolvers};
#[test]
fn dbg() {
    let host = WasmResolvers::new();
    let small = br#"{"abi":1,"container":"c","id":"i","partitionKey":"p","versions":[{"item":{"id":"i","version":1},"deleted":false,"region":"a","timestamp":1,"logical":0},{"item":{"id":"i","version":2},"deleted":false,"region":"b","timestamp":1,"logical":0}]}"#;
    for (name, m) in converge_udf_examples::ALL.iter().take(4) {
        let r = host.call_module(m, small, &ResolverLimits::default()).unwrap();
        eprintln!("{name}: {:?} fuel {} mem {}", r.outcome, r.fuel_used, r.memory_bytes);
        let r = host.call_module(m, b"{}", &ResolverLimits::default()).unwrap();
        eprintln!("{name} (bad input): {:?} fuel {} mem {}", r.outcome, r.fuel_used, r.memory_bytes);
    }
}
