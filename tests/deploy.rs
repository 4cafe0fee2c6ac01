//! The deployment in `deploy/` (Dockerfile, compose, Kubernetes manifests, Prometheus settings,
//! the camera-split script), checked statically by `tests/reference/check_deploy.py` (PyYAML):
//! no Docker daemon or cluster needed, so CI runs it everywhere.

mod common;

/// Every YAML document parses; kinds and apiVersions; Triton asks for a GPU, serves gRPC on 8001
/// and is probed on its health endpoints; the workers' `triton://` URLs reach the Triton Service's
/// gRPC port; selectors, ports, volumes, kustomizations, compose build contexts and scrape ports
/// agree; the Dockerfile runs `scripts/setup.sh` and its runtime stage has what setup.sh's build
/// needs at run time.
#[test]
fn deployment_manifests_agree() {
    let root = common::repo_root();
    let printed = common::run_reference("check_deploy.py", &["manifests", common::path_arg(&root)]);
    assert!(
        printed.contains("checks passed"),
        "unexpected output: {printed}"
    );
}

/// `deploy/split-cameras.sh` (run with `sh`) gives each (ordinal, replica count) a share of the
/// camera list: the shares are disjoint, cover the list and differ by at most one camera; the
/// pod-name form matches the bare ordinal; mistakes exit non-zero.
#[test]
fn camera_split_covers_the_list_once() {
    let root = common::repo_root();
    let printed = common::run_reference("check_deploy.py", &["split", common::path_arg(&root)]);
    assert!(
        printed.contains("checks passed"),
        "unexpected output: {printed}"
    );
}
