//! UniFFI's bindings generator, run in library mode by `scripts/build-kotlin.sh`.
fn main() {
    uniffi::uniffi_bindgen_main()
}
