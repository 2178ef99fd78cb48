//! The committed dev-contract artifacts (contracts/artifacts/*.json) must be exactly what the
//! pinned solc produces from contracts/*.sol, and their ABI must match the wire protocol
//! (selectors, events, errors). Both are checked by `tools/compile-contracts.mjs --check`.

use std::path::Path;
use std::process::Command;

fn run(root: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

#[test]
fn contract_artifacts_are_fresh_and_match_the_protocol() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run(root, "bash", &["tools/install.sh"]);
    run(root, "node", &["tools/compile-contracts.mjs", "--check"]);
}
