//! `lab new DIR`: a student's starting point, a factory project that builds on its own against
//! this checkout's `stubs`.
//!
//! The files are templates under `crates/lab/template/`, named `*.txt` so that cargo does not
//! take them for part of this workspace, and built into the program; writing fills in where
//! this checkout and the new project lie. The project's `Cargo.lock` is this checkout's own, so
//! that the student builds with the versions we test with (cargo drops the entries it does not
//! need).

use std::borrow::Cow;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Options of `lab new`.
#[derive(Debug, Clone, clap::Args)]
pub struct NewArgs {
    /// The folder to write the project in; it must not exist, or be empty.
    ///
    /// It is created with its parents if missing. A folder that holds anything is refused, so
    /// that no work is overwritten.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Why `lab new` could not write the project.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// The folder holds files already; writing into it could overwrite a student's work.
    #[error("{} is not empty: give a new folder (it will be created) or an empty one", .dir.display())]
    NotEmpty {
        /// The folder given.
        dir: PathBuf,
    },
    /// The path names a file, not a folder.
    #[error("{} is a file, not a folder: give a new folder (it will be created) or an empty one", .dir.display())]
    NotAFolder {
        /// The path given.
        dir: PathBuf,
    },
    /// The folder could not be read or created.
    #[error("cannot use {}: {source}", .dir.display())]
    Folder {
        /// The folder given.
        dir: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A file of the project could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The checkout this program was built from no longer holds the `stubs` crate that the
    /// project depends on (it was moved or deleted since).
    #[error("the stubs crate is not at {}, where this program was built from: build and run lab new again from your pairbroker checkout", .path.display())]
    StubsMissing {
        /// Where the stubs crate was.
        path: PathBuf,
    },
}

/// Stands for the absolute path of this checkout's `stubs` crate, in a TOML string.
const STUBS_PATH: &str = "{{STUBS_PATH}}";
/// Stands for the pairbroker checkout, quoted for a shell.
const CHECKOUT: &str = "{{CHECKOUT}}";
/// Stands for the new project's folder, quoted for a shell.
const DIR: &str = "{{DIR}}";
/// Stands for the `--factory` argument of `lab mark` for the new project, quoted for a shell.
const MARK_FACTORY: &str = "{{MARK_FACTORY}}";

/// The project's files, in the order they are written and listed: where each goes in the
/// folder, and its template.
const TEMPLATES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../template/Cargo.toml.txt")),
    ("Cargo.lock", include_str!("../../../Cargo.lock")),
    (
        "factory/Cargo.toml",
        include_str!("../template/factory/Cargo.toml.txt"),
    ),
    (
        "factory/src/main.rs",
        include_str!("../template/factory/src/main.rs.txt"),
    ),
    (
        "factory/src/wire.rs",
        include_str!("../template/factory/src/wire.rs.txt"),
    ),
    ("README.md", include_str!("../template/README.md.txt")),
    (".gitignore", include_str!("../template/gitignore.txt")),
];

/// The pairbroker checkout this program was built from: `crates/lab` lies two folders below it.
fn checkout() -> &'static Path {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR"));
    lab.ancestors().nth(2).unwrap_or(lab)
}

/// This checkout's `stubs` crate, if it is still there.
pub fn stubs_dir() -> Result<PathBuf, NewError> {
    let path = checkout().join("stubs");
    if path.join("Cargo.toml").is_file() {
        Ok(path)
    } else {
        Err(NewError::StubsMissing { path })
    }
}

/// Writes the starting point and says what comes next.
pub fn run(args: &NewArgs) -> Result<(), NewError> {
    let (dir, written) = write_project(&args.dir)?;
    // A closed standard output (`lab new DIR | head -1`) is no reason to fail: the files are
    // written.
    let _ = io::stdout().write_all(summary(&dir, &written).as_bytes());
    Ok(())
}

/// Writes the project into `dir`, which is created (with its parents) unless it exists; it must
/// not hold anything yet. Returns the absolute paths of the files written, in order. Nothing is
/// written when `dir` is refused.
pub fn write(dir: &Path) -> Result<Vec<PathBuf>, NewError> {
    write_project(dir).map(|(_, written)| written)
}

/// [`write`], which also returns the folder's absolute path.
fn write_project(dir: &Path) -> Result<(PathBuf, Vec<PathBuf>), NewError> {
    let stubs = stubs_dir()?;
    refuse_unless_empty(dir)?;
    fs::create_dir_all(dir).map_err(|source| NewError::Folder {
        dir: dir.to_owned(),
        source,
    })?;
    // Absolute, because the README's commands run from the pairbroker checkout too.
    let dir = fs::canonicalize(dir).map_err(|source| NewError::Folder {
        dir: dir.to_owned(),
        source,
    })?;
    let stubs = stubs.to_string_lossy();
    let checkout = checkout().to_string_lossy();
    let dir_text = dir.to_string_lossy();
    let mark = mark_factory(&dir);
    let substitutions = [
        (STUBS_PATH, toml_escape(&stubs)),
        (CHECKOUT, shell_quote(&checkout)),
        (DIR, shell_quote(&dir_text)),
        (MARK_FACTORY, shell_quote(&mark)),
    ];
    let mut written = Vec::with_capacity(TEMPLATES.len());
    for (path, template) in TEMPLATES {
        let path = dir.join(path);
        let mut text = (*template).to_owned();
        for (placeholder, value) in &substitutions {
            text = text.replace(placeholder, value);
        }
        write_new_file(&path, &text)?;
        written.push(path);
    }
    Ok((dir, written))
}

/// Refuses a `dir` that is a file, or a folder that holds anything.
fn refuse_unless_empty(dir: &Path) -> Result<(), NewError> {
    let folder_error = |source| NewError::Folder {
        dir: dir.to_owned(),
        source,
    };
    match fs::metadata(dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(folder_error(error)),
        Ok(metadata) if !metadata.is_dir() => {
            return Err(NewError::NotAFolder {
                dir: dir.to_owned(),
            })
        }
        Ok(_) => {}
    }
    let mut entries = fs::read_dir(dir).map_err(folder_error)?;
    match entries.next() {
        None => Ok(()),
        Some(_) => Err(NewError::NotEmpty {
            dir: dir.to_owned(),
        }),
    }
}

/// Writes `text` to a new file at `path`, creating its folder; a file already there is an error
/// rather than overwritten.
fn write_new_file(path: &Path, text: &str) -> Result<(), NewError> {
    let write_error = |source| NewError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(write_error)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(write_error)?;
    file.write_all(text.as_bytes()).map_err(write_error)
}

/// The command `lab mark` runs to start the factory in `dir`; it fills in `{port}` and `{broker}`.
pub fn mark_factory(dir: &Path) -> String {
    let manifest = dir.join("Cargo.toml");
    format!(
        "cargo run --quiet --manifest-path {} -p factory -- --port {{port}} --broker {{broker}}",
        shell_quote(&manifest.to_string_lossy())
    )
}

/// What `lab new` prints: the files written and the next steps.
fn summary(dir: &Path, written: &[PathBuf]) -> String {
    let mut text = format!("lab new: wrote a factory project in {}:\n", dir.display());
    for path in written {
        let shown = path.strip_prefix(dir).unwrap_or(path);
        text.push_str(&format!("  {}\n", shown.display()));
    }
    let mark = shell_quote(&mark_factory(dir)).into_owned();
    let checkout = shell_quote(&checkout().to_string_lossy()).into_owned();
    let dir = shell_quote(&dir.to_string_lossy()).into_owned();
    text.push_str(&format!(
        "\nNext:\n  \
         cd {dir} && cargo build            # the starting point builds as it is\n  \
         # write the parts marked TODO in factory/src/main.rs (README.md is the lab sheet), then\n  \
         # check them from the pairbroker checkout:\n  \
         cd {checkout} && cargo run -p lab -- mark --factory {mark}\n"
    ));
    text
}

/// `text` as one word for `sh`: as it is when it holds only characters the shell takes
/// literally, else in double quotes (easier to read) when nothing in it is special there, else
/// in single quotes.
fn shell_quote(text: &str) -> Cow<'_, str> {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c));
    if plain {
        Cow::Borrowed(text)
    } else if !text.contains(['"', '$', '`', '\\', '!']) {
        // `!` too: an interactive bash expands it inside double quotes.
        Cow::Owned(format!("\"{text}\""))
    } else {
        // Inside single quotes every character is literal but the quote itself, which ends the
        // quoting, is escaped, and starts it again: ' becomes '\''.
        Cow::Owned(format!("'{}'", text.replace('\'', r"'\''")))
    }
}

/// `text` escaped for the inside of a TOML basic string (`"..."`).
fn toml_escape(text: &str) -> Cow<'_, str> {
    if text.contains(['\\', '"']) {
        Cow::Owned(text.replace('\\', r"\\").replace('"', "\\\""))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files of a project written into `dir`, relative to it.
    fn listed(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut folders = vec![dir.to_owned()];
        while let Some(folder) = folders.pop() {
            for entry in fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    files.push(path.strip_prefix(dir).unwrap().to_owned());
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn a_folder_that_holds_anything_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let error = write(dir.path()).unwrap_err();
        assert!(matches!(error, NewError::NotEmpty { .. }), "{error:?}");
        assert!(error.to_string().contains("is not empty"), "{error}");
        assert_eq!(listed(dir.path()), vec![PathBuf::from("notes.txt")]);
    }

    #[test]
    fn a_file_is_refused_as_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("factory");
        fs::write(&file, "").unwrap();
        let error = write(&file).unwrap_err();
        assert!(matches!(error, NewError::NotAFolder { .. }), "{error:?}");
    }

    #[test]
    fn an_empty_folder_gets_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path()).unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let expected: Vec<PathBuf> = TEMPLATES.iter().map(|(path, _)| root.join(path)).collect();
        assert_eq!(written, expected);
        let mut relative: Vec<PathBuf> = TEMPLATES.iter().map(|(path, _)| path.into()).collect();
        relative.sort();
        assert_eq!(listed(dir.path()), relative);
        for path in &written {
            let text = fs::read_to_string(path).unwrap();
            assert!(
                !text.contains("{{"),
                "{} keeps a placeholder",
                path.display()
            );
        }
    }

    #[test]
    fn a_missing_folder_is_created_with_its_parents() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("course").join("my-factory");
        let written = write(&project).unwrap();
        assert_eq!(written.len(), TEMPLATES.len());
        assert!(project.join("factory/src/main.rs").is_file());
    }

    #[test]
    fn the_project_depends_on_this_checkouts_stubs_by_an_absolute_path_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path()).unwrap();
        let manifest = fs::read_to_string(dir.path().join("Cargo.toml")).unwrap();
        let line = manifest
            .lines()
            .find(|line| line.starts_with("stubs = "))
            .expect("a stubs dependency");
        let path = line
            .split('"')
            .nth(1)
            .expect("the stubs path, in a TOML string");
        let path = Path::new(path);
        assert!(path.is_absolute(), "{line}");
        assert!(path.join("src/lib.rs").is_file(), "{line}");
        assert_eq!(path, stubs_dir().unwrap());
    }

    #[test]
    fn the_projects_dependencies_are_those_of_this_workspace() {
        let ours = include_str!("../../../Cargo.toml");
        let template = include_str!("../template/Cargo.toml.txt");
        let dependencies = template
            .split("[workspace.dependencies]")
            .nth(1)
            .expect("a [workspace.dependencies] table");
        let mut compared = 0;
        for line in dependencies.lines() {
            if line.trim().is_empty() || line.starts_with('#') || line.starts_with("stubs ") {
                continue;
            }
            assert!(
                ours.lines().any(|our| our == line),
                "{line:?} differs from this workspace's Cargo.toml"
            );
            compared += 1;
        }
        assert!(compared >= 4, "tarpc, tokio, clap and futures compared");
    }

    #[test]
    fn the_handshake_written_for_students_is_the_one_our_programs_speak() {
        let wire = include_str!("../template/factory/src/wire.rs.txt");
        let magic = std::str::from_utf8(transport::handshake::MAGIC).unwrap();
        assert!(wire.contains(&format!("const MAGIC: &[u8; 8] = b\"{magic}\";")));
        let accepted = transport::handshake::ACCEPTED;
        assert!(wire.contains(&format!("const ACCEPTED: u8 = {accepted};")));
        let wrong_token = transport::handshake::WRONG_TOKEN;
        assert!(wire.contains(&format!("const WRONG_TOKEN: u8 = {wrong_token};")));
    }

    #[test]
    fn paths_are_quoted_for_the_shell_only_when_they_need_it() {
        assert_eq!(shell_quote("/home/ada/my-factory"), "/home/ada/my-factory");
        assert_eq!(shell_quote("/home/ada/my lab"), "\"/home/ada/my lab\"");
        assert_eq!(shell_quote("/tmp/it's"), "\"/tmp/it's\"");
        assert_eq!(shell_quote("/tmp/$HOME's"), r"'/tmp/$HOME'\''s'");
        let command = mark_factory(Path::new("/home/ada/my lab"));
        assert_eq!(
            command,
            "cargo run --quiet --manifest-path \"/home/ada/my lab/Cargo.toml\" -p factory -- --port {port} --broker {broker}"
        );
        assert_eq!(shell_quote(&command), format!("'{command}'"));
    }

    #[test]
    fn a_path_is_escaped_for_a_toml_string() {
        assert_eq!(
            toml_escape(r"C:\pairbroker\stubs"),
            r"C:\\pairbroker\\stubs"
        );
        assert_eq!(toml_escape("/a\"b"), "/a\\\"b");
        assert_eq!(toml_escape("/work/stubs"), "/work/stubs");
    }
}
