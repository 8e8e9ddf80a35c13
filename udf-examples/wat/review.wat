;; A resolver written by hand in WebAssembly text, from docs/abi.md alone: it proves the ABI
;; needs no SDK and no particular language.
;;
;; Policy: a human reviews every conflict. It logs one line and defers, so the conflict goes to
;; the conflicts feed with reason "deferred: sent to review" while the item shows the LWW
;; winner as tentative.
(module
  (import "converge" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  ;; Answer and log line, at fixed addresses below the heap.
  (data (i32.const 64) "{\"defer\":\"sent to review\"}")
  (data (i32.const 128) "review.wat: deferring a conflict")
  ;; Input goes above 1 KiB; a bump pointer hands out space.
  (global $next (mut i32) (i32.const 1024))

  (func (export "converge_abi_version") (result i32)
    (i32.const 1))

  ;; Returns `len` writable bytes, growing memory as needed, or 0 when it cannot.
  (func (export "converge_alloc") (param $len i32) (result i32)
    (local $start i32)
    (local $end i32)
    (local.set $start (global.get $next))
    (local.set $end (i32.add (local.get $start) (local.get $len)))
    (block $fits
      (br_if $fits (i32.le_u (local.get $end) (i32.shl (memory.size) (i32.const 16))))
      (br_if $fits
        (i32.ne
          (memory.grow
            (i32.add (i32.const 1)
              (i32.shr_u (i32.sub (local.get $end) (i32.shl (memory.size) (i32.const 16))) (i32.const 16))))
          (i32.const -1)))
      (return (i32.const 0)))
    (global.set $next (local.get $end))
    (local.get $start))

  ;; The input is not needed: every conflict is deferred.
  (func (export "converge_resolve") (param $ptr i32) (param $len i32) (result i64)
    (call $log (i32.const 128) (i32.const 32))
    ;; (out_ptr << 32) | out_len
    (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 26)))
)
