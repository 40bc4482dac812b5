//! The CRDs shipped in `manifests/` and in the Helm chart are exactly what `conflux-operator crd`
//! prints. Regenerate them with
//! `cargo run -q --manifest-path operator/Cargo.toml -- crd > manifests/crd.yaml` and
//! `... -- crd --kind ConfluxCluster > charts/conflux-operator/crds/confluxclusters.conflux.io.yaml`
//! (likewise `--kind ConfluxBackup` for `confluxbackups.conflux.io.yaml`), or run this test with
//! `CONFLUX_REGENERATE_CRD=1`, which writes all three.

use std::path::PathBuf;

use conflux_operator::crd::crd_yaml;

/// Each shipped file and the `--kind` it holds (`None`: every CRD).
fn shipped() -> [(PathBuf, Option<&'static str>); 3] {
    // Cargo runs tests in the package root (`operator/`); a compile-time path would point into
    // whichever checkout built this binary first.
    let repository = PathBuf::from("..");
    let chart = repository.join("charts/conflux-operator/crds");
    [
        (repository.join("manifests/crd.yaml"), None),
        (chart.join("confluxclusters.conflux.io.yaml"), Some("ConfluxCluster")),
        (chart.join("confluxbackups.conflux.io.yaml"), Some("ConfluxBackup")),
    ]
}

#[test]
fn shipped_crds_equal_the_generated_ones() {
    let regenerate = std::env::var_os("CONFLUX_REGENERATE_CRD").is_some();
    for (path, kind) in shipped() {
        let generated = crd_yaml(kind).expect("the CRDs serialize");
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
