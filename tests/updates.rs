//! Model updates and several programs on one path (issue 25): the file
//! stays the size of what the app still uses, and nothing it holds is
//! packed again. Every launch is a fresh process (`child_launch`), and
//! compares its outputs with a runtime without a cache.
//!
//! Versions `v1`..`v3` have the same shapes and other weights, registered
//! by content like ExecuTorch's constants (named by the digest of their
//! bytes); `qc8` and `qc4` are other programs (other shapes).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use xnncache_tests::launch::{Ended, Launch, Spec};
use xnncache_tests::TempDir;

#[test]
#[ignore = "a launch, run in a child process by the tests of this file"]
fn child_launch() {
    xnncache_tests::launch::child_launch();
}

/// A launch of `models` on `path`, registered by content, with environment `env`.
fn launch(path: &Path, models: &str, env: &[(&'static str, String)]) -> Launch {
    let spec = Spec { path, models, flags: "bycontent", env: env.to_vec() };
    match spec.run() {
        Ended::Done(l) => {
            assert_eq!(l.get("wrong"), 0, "{models}: outputs differ from a runtime without a cache: {:?}", l.fields);
            l
        }
        other => panic!("launch of {models}: {other:?}"),
    }
}

/// What a launch may change of the file: identity, length, modification time.
fn file_state(path: &Path) -> (u64, u64, u64, i64, i64) {
    let m = std::fs::metadata(path).unwrap();
    (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec())
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The size of a file holding only `models`, built on a fresh path.
fn own_size(dir: &TempDir, models: &str) -> u64 {
    let path = dir.file(&format!("alone-{}.xnncache", models.replace(',', "-")));
    launch(&path, models, &[]);
    size(&path)
}

/// A warm launch: everything found, nothing packed, nothing written.
fn assert_warm(path: &Path, models: &str, env: &[(&'static str, String)]) {
    let before = file_state(path);
    let l = launch(path, models, env);
    assert_eq!((l.get("packed"), l.get("commits"), l.get("dropped")), (0, 0, 0), "{models} packed, committed or dropped: {:?}", l.fields);
    assert!(l.get("hits") > 0);
    assert_eq!(file_state(path), before, "a warm launch of {models} changed the file");
}

/// At most 1.10 times `reference` (the bound).
fn assert_bounded(path: &Path, reference: u64, what: &str) {
    let have = size(path);
    assert!(have * 10 <= reference * 11, "{what}: the file is {have} bytes, over 1.10 x {reference}");
}

#[test]
fn three_versions_under_one_path_keep_the_file_one_version_large() {
    let dir = TempDir::new("updates-versions");
    let path = dir.file("model.xnncache");
    for (i, v) in ["v1", "v2", "v3"].into_iter().enumerate() {
        let own = own_size(&dir, v);
        let cold = launch(&path, v, &[]);
        assert!(cold.get("packed") > 0, "{v} is new weights");
        if i > 0 {
            // The update launch dropped the version before it, and its
            // write-back left a file of one version.
            assert!(cold.get("dropped") > 0, "{v}: nothing dropped: {:?}", cold.fields);
        }
        assert_bounded(&path, own, &format!("after {v}'s first launch"));
        // For docs/UPDATES.md (`-- --nocapture`).
        eprintln!("UPDATES {v}: file {} bytes ({v} alone {own}), packed {}, dropped {}", size(&path), cold.get("packed"), cold.get("dropped"));
        assert_warm(&path, v, &[]);
        assert_bounded(&path, own, &format!("after {v}'s warm launch"));
    }
}

#[test]
fn two_programs_launched_alternately_are_never_packed_again() {
    let dir = TempDir::new("updates-alternate");
    let path = dir.file("model.xnncache");
    let (a, b) = ("v1", "qc8");
    launch(&path, a, &[]);
    let second = launch(&path, b, &[]);
    assert_eq!(second.get("dropped"), 0, "another program's first launch dropped the first: {:?}", second.fields);
    // An update of one of them drops its old version, not the other program.
    let update = launch(&path, "v2", &[]);
    assert!(update.get("dropped") > 0);
    let both = own_size(&dir, "v2,qc8");
    assert_bounded(&path, both, "after the update");
    for round in 0..4 {
        for m in ["v2", b] {
            assert_warm(&path, m, &[]);
        }
        assert_bounded(&path, both, &format!("round {round}"));
    }
}

/// Two programs of one shape (two fine-tunes of one architecture) look like
/// an update of each other; labels tell them apart.
#[test]
fn labels_keep_two_programs_of_one_shape() {
    let dir = TempDir::new("updates-labels");
    let path = dir.file("model.xnncache");
    let label = |l: &str| vec![("T_LABEL", l.to_string())];
    launch(&path, "v1", &label("first"));
    let second = launch(&path, "v2", &label("second"));
    assert_eq!(second.get("dropped"), 0);
    for _ in 0..4 {
        assert_warm(&path, "v1", &label("first"));
        assert_warm(&path, "v2", &label("second"));
    }
    // A new version under a label replaces what that label held, only that.
    let update = launch(&path, "v3", &label("first"));
    assert!(update.get("dropped") > 0);
    assert_warm(&path, "v2", &label("second"));
    assert_bounded(&path, own_size(&dir, "v2,v3"), "after the labelled update");

    // Unlabelled, the same two are taken for versions of one program: the
    // documented limit of telling programs apart by shape.
    let plain = dir.file("plain.xnncache");
    launch(&plain, "v1", &[]);
    assert!(launch(&plain, "v2", &[]).get("dropped") > 0);
    assert!(launch(&plain, "v1", &[]).get("packed") > 0);
}

/// A program left unused is dropped only by the size cap, least recently
/// written first, and only past the cap: at the cap everything stays.
#[test]
fn the_size_cap_drops_the_least_recently_written_program_only_past_it() {
    let dir = TempDir::new("updates-cap");
    // Packed bytes of each program alone.
    let programs = ["v1", "qc8", "qc4"];
    let bytes: Vec<u64> = programs.iter().map(|m| launch(&dir.file(&format!("alone-{m}.xnncache")), m, &[]).get("stored")).collect();
    let all: u64 = bytes.iter().sum();
    for (cap, dropped) in [(all, 0), (all - 1, bytes[0])] {
        let path = dir.file(&format!("cap-{cap}.xnncache"));
        let env = vec![("T_SIZE_CAP", cap.to_string())];
        for (i, m) in programs.iter().enumerate() {
            let l = launch(&path, m, &env);
            let want = if i == 2 { dropped } else { 0 };
            assert_eq!(l.get("dropped"), want, "cap {cap}, {m}'s first launch: {:?}", l.fields);
        }
        // The two most recently written stay warm.
        assert_warm(&path, "qc8", &env);
        assert_warm(&path, "qc4", &env);
        if dropped == 0 {
            assert_warm(&path, "v1", &env);
        } else {
            assert!(launch(&path, "v1", &env).get("packed") > 0, "v1 was dropped: packed again");
        }
    }
    // Without a cap, no number of other programs drops one.
    let path = dir.file("no-cap.xnncache");
    for m in ["v1", "qc8", "qc4", "fc_f32", "conv"] {
        assert_eq!(launch(&path, m, &[]).get("dropped"), 0);
    }
    assert_warm(&path, "v1", &[]);
}

/// An update launch's drop, killed at each of its crash points (the commit
/// that leaves the old version out, the rewrite without it): the next
/// launch finds the old commit or the new one, with exact outputs, and
/// packs nothing of the version it had; a later update still bounds the file.
#[test]
fn a_drop_killed_at_any_of_its_points_leaves_a_usable_file() {
    let dir = TempDir::new("updates-kills");
    let base = dir.file("base.xnncache");
    launch(&base, "v1", &[]);
    let probe = dir.file("probe.xnncache");
    std::fs::copy(&base, &probe).unwrap();
    let probed = launch(&probe, "v2", &[]);
    // The last points of an update launch are the drop's: from the index
    // staged without the old version, through the write-back and commit, the
    // point before the rewrite, and the rewrite's own.
    let (first, all) = (probed.get("drop_point"), probed.get("points"));
    assert!(first > 0 && all >= first + 6, "the update passed no drop point: {:?}", probed.fields);
    let v3_alone = own_size(&dir, "v3");
    for k in first..=all {
        let victim = dir.file(&format!("victim-{k}.xnncache"));
        std::fs::copy(&base, &victim).unwrap();
        let spec = Spec { path: &victim, models: "v2", flags: "bycontent", env: vec![("XNNCACHE_CRASH_AT", k.to_string())] };
        match spec.run() {
            Ended::Killed => {}
            other => panic!("crash point {k}: {other:?}"),
        }
        let next = Spec { path: &victim, models: "v2", flags: "bycontent,verify", env: vec![] };
        let l = match next.run() {
            Ended::Done(l) => l,
            other => panic!("after crash point {k}: {other:?}"),
        };
        assert_eq!(l.get("wrong"), 0, "crash point {k}");
        assert_eq!(l.get("file_state"), xnncache::store::FileState::XNNCACHE_FILE_REUSED as u64, "crash point {k}: {:?}", l.fields);
        // The next update bounds the file again.
        launch(&victim, "v3", &[]);
        assert_bounded(&victim, v3_alone, &format!("crash point {k}, after the next update"));
        assert!(xnncache_tests::launch::temporaries(&victim).len() <= 1);
    }
}
