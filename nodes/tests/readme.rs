//! The README's walk-throughs, run as written: every fenced block marked `sh walkthrough`
//! runs with bash from the repository's root, in a process group of its own (what it
//! leaves running, a `sipp -bg` say, is ended with it), and must succeed. A walk-through
//! that drifts from the product fails here.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The walk-through blocks of `text`, in order, with the line each starts on.
fn walkthroughs(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim() == "```sh walkthrough" => current = Some((n + 1, String::new())),
            Some((start, body)) if line.trim() == "```" => {
                blocks.push((*start, std::mem::take(body)));
                current = None;
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn the_readme_walkthroughs_run_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let blocks = walkthroughs(&readme);
    assert!(blocks.len() >= 2, "no walk-throughs found");
    let logs = std::env::temp_dir().join(format!("limes-readme-{}", std::process::id()));
    std::fs::create_dir_all(&logs).expect("log dir");
    for (line, block) in blocks {
        // Every command must succeed, as under `set -e`, but for `sipp -bg`, whose
        // foreground half exits 99 ("no calls processed") by design.
        let script = format!(
            "set -uo pipefail\n\
             trap 'rc=$?; case \"$BASH_COMMAND\" in *sipp*-bg*) ;; \
             *) echo \"walk-through: '$BASH_COMMAND' failed ($rc)\" >&2; exit $rc;; esac' ERR\n\
             {block}wait\n"
        );
        // Output to files: a `sipp -bg` keeps them open after the block ends.
        let (stdout, stderr) = (
            logs.join(format!("{line}.out")),
            logs.join(format!("{line}.err")),
        );
        let file = |p: &Path| std::fs::File::create(p).expect("log file");
        // A session of its own (no controlling terminal: sipp in a background process
        // group of the test's terminal stops at once), whose id is its process group's.
        let mut child = Command::new("setsid")
            .args(["bash", "-c"])
            .arg(&script)
            .current_dir(&root)
            .env_remove("LIMES_ADMIN")
            .env_remove("LIMES_TOKEN")
            // An open stdin, as at a terminal (sipp quits at the end of its input).
            .stdin(Stdio::piped())
            .stdout(file(&stdout))
            .stderr(file(&stderr))
            .spawn()
            .expect("bash runs");
        let group = child.id();
        let deadline = Instant::now() + Duration::from_secs(600);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        drop(child.stdin.take());
        // Whatever the block left behind goes: its process group, and a `sipp -bg`
        // (which leaves the group) by the PID it printed.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{group}")])
            .status();
        let out = std::fs::read_to_string(&stdout).unwrap_or_default();
        for pid in out
            .lines()
            .filter_map(|l| l.split("Background mode - PID=[").nth(1))
            .filter_map(|rest| rest.split(']').next())
        {
            let _ = Command::new("kill").arg(pid).status();
        }
        let _ = child.wait();
        let err = std::fs::read_to_string(&stderr).unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()),
            "README.md line {line}: the walk-through failed ({status:?})\n--- block\n{block}--- stdout\n{}\n--- stderr\n{}",
            out,
            err
        );
    }
    let _ = std::fs::remove_dir_all(&logs);
}
