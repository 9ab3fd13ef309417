//! Test processes never outlive their test: a test that panics while it holds a `serve` process
//! or a browser still ends them, so one failing run cannot poison the next on the same machine.

use std::{path::Path, time::Duration};

use super::{browser::Browser, harness::HubProcess};

/// Pids of live (not zombie) processes whose process group is `group`.
fn members_of_group(group: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            // After the `(comm)` field: state, ppid, pgrp.
            let rest: Vec<&str> =
                stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
            rest.first() != Some(&"Z") && rest.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(group)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z')))
}

#[tokio::test]
async fn a_test_that_panics_while_serve_runs_leaves_no_server_behind() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::new(Path::new(env!("CARGO_BIN_EXE_connect-hub")), dir.path()).unwrap();
    let child = hub.start().await.unwrap();
    let pid = child.id();
    assert!(alive(pid));
    let failed = tokio::spawn(async move {
        let _child = child;
        panic!("a failing assertion half-way through a test");
    })
    .await;
    assert!(failed.is_err_and(|e| e.is_panic()));
    assert!(!alive(pid), "serve (pid {pid}) outlived the test that started it");
}

#[tokio::test]
async fn a_test_that_panics_while_the_browser_runs_leaves_no_chromium_behind() {
    let Some(mut browser) = Browser::start("processes").await else { return };
    browser.goto("about:blank").await;
    let group = browser.process_group();
    let before = members_of_group(group);
    assert!(before.len() > 1, "chromedriver and chromium run in one process group: {before:?}");
    let failed = tokio::spawn(async move {
        let _browser = browser;
        panic!("a failing assertion half-way through a browser test");
    })
    .await;
    assert!(failed.is_err_and(|e| e.is_panic()));
    // SIGKILL is immediate, but the kernel reaps chromium's children through init: poll briefly.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !members_of_group(group).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(members_of_group(group), Vec::<u32>::new(), "browser processes outlived the test");
}
