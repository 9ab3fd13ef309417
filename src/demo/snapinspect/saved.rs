//! The fake's grants kept in a file beside the demo's data, so a restarted demo still knows the
//! tokens it issued: the whole state written after every change, through a temporary file.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::Grant;

/// What the file holds: every valid access token with its grant, every refresh token with the
/// access token it is paired with.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct Saved {
    pub access: HashMap<String, Grant>,
    pub refresh: HashMap<String, String>,
}

/// Read the state saved at `path`; none yet is an empty state.
pub(super) fn load(path: &Path) -> anyhow::Result<Saved> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| {
            format!("{} is not the fake SnapInspect's state; delete it to start afresh", path.display())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Write the state whole (readable by this user only: it holds tokens), replacing the old file
/// only once the new one is complete.
pub(super) fn store(
    path: &Path,
    access: &HashMap<String, Grant>,
    refresh: &HashMap<String, String>,
) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct View<'a> {
        access: &'a HashMap<String, Grant>,
        refresh: &'a HashMap<String, String>,
    }
    let text = serde_json::to_string(&View { access, refresh })?;
    let mut partial = PathBuf::from(path);
    partial.set_extension("partial");
    crate::demo::write_private(&partial, &text)?;
    std::fs::rename(&partial, path).with_context(|| format!("replacing {}", path.display()))
}
