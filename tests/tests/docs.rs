//! README.md and the operating docs in docs/: every relative link resolves to a file that exists
//! and, when it names an anchor, to a heading of that file (GitHub's anchor rule); README stays
//! short enough for the lab's users.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace root")
}

/// README.md and every .md file under docs/.
fn documents() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                out.push(path);
            }
        }
    }
    let mut docs = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut docs);
    docs
}

/// The lines of a markdown file outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// GitHub's anchor for a heading: lowercase; spaces become `-`; every other character but
/// letters, digits, `-` and `_` is dropped (backticks and punctuation included).
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a markdown file's headings, a repeated one suffixed `-1`, `-2`... as GitHub does.
fn anchors(text: &str) -> HashSet<String> {
    let mut found = HashSet::new();
    for line in prose(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim_end_matches('#'));
        let mut anchor = base.clone();
        let mut n = 0;
        while found.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        found.insert(anchor);
    }
    found
}

/// The targets of the `[text](target)` and `![alt](target)` links of a markdown file, outside
/// code blocks and inline code, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut fenced = false;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code is not a link: blank out what is between backticks, except in a link's
        // text, which GitHub renders as code inside the link (`[`x`](y)`).
        let mut outside = String::with_capacity(line.len());
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
                outside.push(c);
            } else if in_code {
                outside.push(' ');
            } else {
                outside.push(c);
            }
        }
        let mut rest = outside.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            found.push((number + 1, target.to_string()));
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn every_relative_link_of_readme_and_docs_resolves_to_a_file_and_a_heading() {
    let root = root();
    let docs = documents();
    assert!(
        docs.len() > 1,
        "docs/ holds the operating documents, README links to them"
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("a readable markdown file");
        let name = doc.strip_prefix(&root).unwrap_or(doc).display().to_string();
        for (line, target) in links(&text) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                doc.clone()
            } else {
                doc.parent().expect("a file's folder").join(path)
            };
            if !file.exists() {
                broken.push(format!(
                    "{name}:{line}: {target}: no file {}",
                    file.display()
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            let Ok(linked) = std::fs::read_to_string(&file) else {
                broken.push(format!(
                    "{name}:{line}: {target}: an anchor into a file that is not text"
                ));
                continue;
            };
            if !anchors(&linked).contains(anchor) {
                broken.push(format!(
                    "{name}:{line}: {target}: no heading with the anchor #{anchor}"
                ));
            }
        }
    }
    assert!(checked > 20, "only {checked} relative links were found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn readme_is_at_most_300_lines() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; operating a broker belongs in docs/"
    );
}

#[test]
fn the_anchor_rule_is_githubs() {
    assert_eq!(
        slug("Topics shared by brokers: `--store nats://HOST:PORT`"),
        "topics-shared-by-brokers---store-natshostport"
    );
    assert_eq!(
        slug("Durable topics: `--data-dir DIR`"),
        "durable-topics---data-dir-dir"
    );
    assert_eq!(
        slug("Using the Go lab's programs"),
        "using-the-go-labs-programs"
    );
    let repeated = anchors("# A\n\n```sh\n# not a heading\n```\n## A\n");
    assert_eq!(
        repeated,
        HashSet::from(["a".to_string(), "a-1".to_string()])
    );
    assert_eq!(
        links("[a](b.md#c) `[x](not-a-link)` ![d](e.png) [`f`](g.md)\n```\n[h](i)\n```"),
        vec![
            (1, "b.md#c".to_string()),
            (1, "e.png".to_string()),
            (1, "g.md".to_string())
        ]
    );
}
