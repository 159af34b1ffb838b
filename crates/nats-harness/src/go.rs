//! The Go toolchain as the benchmark and the system tests run it on the Go lab's module
//! (`tests/go`): the same environment for both, so that a program the tests check is built
//! the way the benchmark builds it.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// `go args`, to run in the module `source`. Nothing is downloaded (the module has no
/// requirements, and `GOPROXY=off` keeps it so) and nothing is written to `$HOME`: Go's caches
/// live in `<target>/go-cache`, beside cargo's, and are created here.
pub fn command<I, A>(source: &Path, target: &Path, args: I) -> std::io::Result<Command>
where
    I: IntoIterator<Item = A>,
    A: AsRef<OsStr>,
{
    let cache = target.join("go-cache");
    let (gocache, gopath, gotmpdir) = (cache.join("build"), cache.join("path"), cache.join("tmp"));
    for dir in [&gocache, &gopath, &gotmpdir] {
        std::fs::create_dir_all(dir)?;
    }
    let mut command = Command::new("go");
    command
        .args(args)
        .current_dir(source)
        // Module mode whatever the caller's environment says: the import paths are the module's.
        .env("GO111MODULE", "on")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        // A newer Go must not fetch the toolchain go.mod names; any Go from 1.19 builds it.
        .env("GOTOOLCHAIN", "local")
        // No go.work above the module, no C compiler needed for net.
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", &gocache)
        .env("GOPATH", &gopath)
        .env("GOTMPDIR", &gotmpdir);
    Ok(command)
}
