//! The README's programs are example files that CI builds, word for word, so the front page
//! cannot drift from code that compiles. Blocks fenced `rust,ignore` are declared excerpts.

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn every_rust_program_in_the_readme_is_an_example_file() {
    let readme = read("README.md");
    let examples: Vec<String> =
        std::fs::read_dir(format!("{}/examples", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            // `examples/support/` holds modules the examples share, not programs.
            .filter(|path| path.is_file())
            .map(|path| std::fs::read_to_string(path).unwrap())
            .collect();
    let mut programs = 0;
    for block in readme.split("```rust\n").skip(1) {
        let code = &block[..block.find("```").expect("a closed code block")];
        assert!(
            examples.iter().any(|example| example == code),
            "this README block is no example file, word for word:\n{code}"
        );
        programs += 1;
    }
    assert!(
        programs >= 2,
        "the quickstart and the configuration example"
    );
}
