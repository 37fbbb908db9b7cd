//! The README and the guides in `docs/` are held to the code and to each other: their programs
//! are example files that CI builds, word for word, so no page can drift from code that
//! compiles (blocks fenced `rust,ignore` are declared excerpts), and every relative link leads
//! to a file, and to a heading of it, that exists, so moving a section cannot strand a link.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The README, then every guide in `docs/`, as (path from the crate root, text).
fn pages() -> Vec<(PathBuf, String)> {
    let mut guides: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| path.strip_prefix(root()).unwrap().to_owned())
        .collect();
    guides.sort();
    std::iter::once(PathBuf::from("README.md"))
        .chain(guides)
        .map(|page| {
            let text = std::fs::read_to_string(root().join(&page)).unwrap();
            (page, text)
        })
        .collect()
}

/// The page's text outside fenced code blocks, line by line (a `#` in a shell block is no
/// heading, a `](` in a program no link).
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchors GitHub gives a page's headings: lowercased, everything but letters, digits,
/// spaces, `-` and `_` dropped, spaces made `-`; a repeated one gets `-1`, `-2`…
fn anchors(text: &str) -> Vec<String> {
    let mut anchors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in prose(text) {
        if !line.starts_with('#') {
            continue;
        }
        let Some(heading) = line.trim_start_matches('#').strip_prefix(' ') else {
            continue;
        };
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let repeats = seen.entry(slug.clone()).or_default();
        anchors.push(match *repeats {
            0 => slug,
            n => format!("{slug}-{n}"),
        });
        *repeats += 1;
    }
    anchors
}

/// Every `[text](target)` target of the page's prose.
fn links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            rest = &rest[start + 2..];
            let end = rest.find(')').expect("a closed link target");
            links.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    links
}

#[test]
fn every_rust_program_in_the_readme_and_guides_is_an_example_file() {
    let examples: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        // `examples/support/` holds modules the examples share, not programs.
        .filter(|path| path.is_file())
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    let mut programs = Vec::new();
    for (page, text) in pages() {
        for block in text.split("```rust\n").skip(1) {
            let code = &block[..block.find("```").expect("a closed code block")];
            assert!(
                examples.iter().any(|example| example == code),
                "this block of {} is no example file, word for word:\n{code}",
                page.display()
            );
            programs.push(page.clone());
        }
    }
    assert!(
        programs.contains(&PathBuf::from("README.md")),
        "the README shows the quickstart"
    );
    assert!(
        programs.contains(&PathBuf::from("docs/gate.md")),
        "the gate guide shows the configuration example"
    );
}

#[test]
fn every_relative_link_in_the_readme_and_guides_leads_to_a_page_and_heading_that_exist() {
    let mut checked = 0;
    for (page, text) in pages() {
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            let target_text = std::fs::read_to_string(root().join(&target))
                .unwrap_or_else(|_| panic!("{} links to {link}: no such file", page.display()));
            if !anchor.is_empty() {
                assert!(
                    anchors(&target_text).iter().any(|found| found == anchor),
                    "{} links to {link}: {} has no such heading",
                    page.display(),
                    target.display()
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "the README links every guide: {checked} links"
    );
}

#[test]
fn headings_are_anchored_as_github_anchors_them() {
    let page =
        "# Title\n## Sharing revocations between gateways (Redis)\n```sh\n# a comment\n```\n\
                ### Walkthrough: register, log in\n## `Validation` fields\n## Title\n";
    assert_eq!(
        anchors(page),
        [
            "title",
            "sharing-revocations-between-gateways-redis",
            "walkthrough-register-log-in",
            "validation-fields",
            "title-1"
        ]
    );
}
