//! Records the commit the node is built from (`limes_build_info`, `limes --version`):
//! `LIMES_COMMIT` from the environment (an image built without `.git`), else git's, else
//! `unknown`.

fn main() {
    println!("cargo:rerun-if-env-changed=LIMES_COMMIT");
    for path in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let commit = std::env::var("LIMES_COMMIT")
        .ok()
        .or_else(|| {
            let out = std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LIMES_COMMIT={commit}");
}
