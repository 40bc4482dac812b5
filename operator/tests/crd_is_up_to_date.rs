//! The CRD shipped in `manifests/` and in the Helm chart is exactly what `conflux-operator crd`
//! prints. Regenerate both with
//! `cargo run -q --manifest-path operator/Cargo.toml -- crd > manifests/crd.yaml` and copy it to
//! `charts/conflux-operator/crds/confluxclusters.conflux.io.yaml`, or run this test with
//! `CONFLUX_REGENERATE_CRD=1`, which writes both.

use std::path::PathBuf;

use conflux_operator::crd::crd_yaml;

fn shipped() -> [PathBuf; 2] {
    // Cargo runs tests in the package root (`operator/`); a compile-time path would point into
    // whichever checkout built this binary first.
    let repository = PathBuf::from("..");
    [
        repository.join("manifests/crd.yaml"),
        repository.join("charts/conflux-operator/crds/confluxclusters.conflux.io.yaml"),
    ]
}

#[test]
fn shipped_crds_equal_the_generated_one() {
    let generated = crd_yaml().expect("the CRD serializes");
    let regenerate = std::env::var_os("CONFLUX_REGENERATE_CRD").is_some();
    for path in shipped() {
        if regenerate {
            std::fs::write(&path, &generated).expect("writes the CRD");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            on_disk == generated,
            "{} differs from `conflux-operator crd`; regenerate it (see this test's doc comment)",
            path.display()
        );
    }
}
