//! The spool's files hold device tokens and payloads, so they are private whatever the umask:
//! `[storage] mode` (0600 by default) for `spool.db` and its `-wal`, `-shm` and `.lock`, and a
//! folder made for them gets the same with execute bits (0700). SQLite creates the `-wal` and
//! `-shm` with the database file's own mode, so the database is made first, with the mode.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::spool::SpoolError;

/// Makes `dir` (and its missing parents) if it is missing, with `mode`'s read and write bits
/// and an execute bit wherever it can read. A folder that exists is left as it is: its mode is
/// the operator's (or the package's).
pub fn make_dir(dir: &Path, mode: u32) -> Result<(), SpoolError> {
    if dir.is_dir() {
        return Ok(());
    }
    let dir_mode = mode | ((mode & 0o444) >> 2);
    let io = |source| SpoolError::Io {
        what: format!("creating {}", dir.display()),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(dir_mode)
        .create(dir)
        .map_err(io)?;
    // The umask narrowed it at creation, or widened nothing: either way, exactly this.
    std::fs::set_permissions(dir, Permissions::from_mode(dir_mode)).map_err(io)
}

/// Creates the database file at `path` with `mode` if it is missing, and gives `mode` to it and
/// to whichever of its companions exist.
pub fn restrict(path: &Path, mode: u32) -> Result<(), SpoolError> {
    let io = |what: String| move |source| SpoolError::Io { what, source };
    if !path.exists() {
        // An empty file is a new database to SQLite.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(mode)
            .open(path)
            .map_err(io(format!("creating {}", path.display())))?;
    }
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        let Ok(meta) = std::fs::metadata(file) else {
            continue;
        };
        if meta.permissions().mode() & 0o777 != mode {
            std::fs::set_permissions(file, Permissions::from_mode(mode))
                .map_err(io(format!("setting the mode of {}", file.display())))?;
        }
    }
    Ok(())
}
