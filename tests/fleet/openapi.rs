//! The demo's OpenAPI document, checked by tools that are not ours: schemathesis runs its
//! property-based and stateful tests against the live demo from the document and fails on
//! any answer the document does not allow, any 5xx and any crash; headless Chromium, with
//! every host but this one unresolvable, loads `/docs` and must show every operation.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::demo::*;
use common::*;
use http::StatusCode;

/// How long schemathesis generates requests for, and how long it may take in all before the
/// test gives up on it.
const SCHEMATHESIS_BUDGET_SECONDS: u64 = 60;
const SCHEMATHESIS_DEADLINE: Duration = Duration::from_secs(240);

/// Runs `command` to its end, its standard output to `stdout` and its errors to `stdout` +
/// `.err`; kills it past `deadline`. The exit status, or `None` when it was killed.
fn run_bounded(
    mut command: Command,
    stdout: &Path,
    deadline: Duration,
) -> Option<std::process::ExitStatus> {
    command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(stdout).unwrap())
        .stderr(std::fs::File::create(stdout.with_extension("err")).unwrap());
    let mut child = command.spawn().unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a command run by [`run_bounded`] printed, and its errors.
fn printed(stdout: &Path) -> (String, String) {
    (
        std::fs::read_to_string(stdout).unwrap_or_default(),
        std::fs::read_to_string(stdout.with_extension("err")).unwrap_or_default(),
    )
}

/// The demo, with throttling loose enough that a run of generated requests is not answered
/// `429` from its tenth registration on: a `429` is a documented answer, but one that would
/// keep every later request from reaching the checks worth making.
fn demo_for_generated_requests(dir: &Path) -> Demo {
    let mut command = demo_command();
    command
        .env("JWT_GATE_DB", dir.join("demo.db"))
        .env("JWT_GATE_FREE_REGISTRATIONS", "100000")
        .env("JWT_GATE_FREE_LOGIN_FAILURES", "100000");
    start(command)
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_answer_the_document_does_not_allow() {
    let schemathesis = external_tool(
        "SCHEMATHESIS",
        "schemathesis",
        "`pip install schemathesis==4.32.5`",
    );
    let dir = temp_dir("openapi-schemathesis");
    let mut demo = demo_for_generated_requests(&dir);
    let document = format!("http://{}/openapi.json", demo.addr);
    assert_eq!(
        get(demo.addr, "/openapi.json", None).await.status,
        StatusCode::OK
    );

    // A genuine token for the secured operations: with it, schemathesis checks that each
    // refuses the request once the token is taken away or replaced by a made-up one.
    assert_eq!(
        register(demo.addr, "schemathesis", PASSWORD).await.status,
        StatusCode::CREATED
    );
    let logged_in = login(demo.addr, "schemathesis", PASSWORD).await;
    let access = logged_in.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let authorization = format!("Authorization: Bearer {access}");

    let mut command = Command::new(schemathesis);
    command.current_dir(&dir).args([
        "run",
        &document,
        "--header",
        &authorization,
        // Every check but one: the service refuses some requests the schema allows, on
        // purpose and with documented answers (a taken or reserved username, one that mixes
        // scripts, an email address it does not take), by rules no JSON schema can state.
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-time",
        &SCHEMATHESIS_BUDGET_SECONDS.to_string(),
        "--request-timeout",
        "20",
        "--workers",
        "1",
    ]);
    let log = dir.join("schemathesis.log");
    let status = tokio::task::spawn_blocking({
        let log = log.clone();
        move || run_bounded(command, &log, SCHEMATHESIS_DEADLINE)
    })
    .await
    .unwrap();
    let (output, errors) = printed(&log);
    let output = output + &errors;
    match status {
        None => panic!("schemathesis ran past {SCHEMATHESIS_DEADLINE:?}:\n{output}"),
        Some(status) => assert!(
            status.success(),
            "schemathesis found answers the document does not allow:\n{output}"
        ),
    }
    // It ran every phase against every operation, and found nothing.
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(output.contains(&format!("✅ {phase}")), "{output}");
    }
    let operations = get(demo.addr, "/openapi.json", None).await.json()["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum::<usize>();
    assert!(
        output.contains(&format!("Selected: {operations}/{operations}")),
        "{output}"
    );
    // And the demo outlived it.
    assert!(
        demo.child.try_wait().unwrap().is_none(),
        "the demo died:\n{output}"
    );
    assert_eq!(get(demo.addr, "/health", None).await.status, StatusCode::OK);
}

/// What a browser fetches to show an HTML text: every `src`, and the `href` of `<link>` and
/// `<base>` tags (an `<a href>` is only fetched when followed).
fn resources(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for tag in html.split('<').skip(1) {
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        let fetched_href = tag.starts_with("link ") || tag.starts_with("base ");
        for attribute in [" src=\"", " href=\""] {
            if attribute == " href=\"" && !fetched_href {
                continue;
            }
            if let Some(at) = tag.find(attribute) {
                let value = &tag[at + attribute.len()..];
                found.push(value[..value.find('"').unwrap_or(value.len())].to_owned());
            }
        }
    }
    found
}

/// Whether `link` leads away from the page's own server.
fn elsewhere(link: &str, addr: std::net::SocketAddr) -> bool {
    let lower = link.to_ascii_lowercase();
    let absolute = lower.starts_with("//") || lower.contains("://");
    absolute && !lower.starts_with(&format!("http://{addr}/"))
}

#[tokio::test(flavor = "multi_thread")]
async fn docs_page_shows_every_operation_offline_in_headless_chromium() {
    let chromium = external_tool("CHROMIUM", "chromium", "`apt-get install chromium`");
    let dir = temp_dir("openapi-chromium");
    let mut command = demo_command();
    command.env("JWT_GATE_DB", dir.join("demo.db"));
    let demo = start(command);
    let addr = demo.addr;

    // The page as served names only its own files, below /docs, and the document.
    let page = get(addr, "/docs", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let assets = resources(&page.text);
    assert!(assets.len() >= 5, "{}", page.text);
    for asset in &assets {
        assert!(!elsewhere(asset, addr), "{asset} in\n{}", page.text);
        // Relative to the page's `<base href="/docs/">`.
        let path = match asset.strip_prefix('/') {
            Some(_) => asset.clone(),
            None => format!("/docs/{}", asset.trim_start_matches("./")),
        };
        let served = get(addr, &path, None).await;
        assert_eq!(served.status, StatusCode::OK, "{path}");
    }
    let initializer = get(addr, "/docs/swagger-initializer.js", None).await;
    assert!(
        initializer.text.contains(r#""url": "/openapi.json""#),
        "{}",
        initializer.text
    );
    assert!(
        !initializer.text.contains("://"),
        "the page would fetch from elsewhere:\n{}",
        initializer.text
    );

    // Chromium, which can resolve no name but this address, runs the page's scripts until
    // they settle (virtual time, so no wall-clock wait) and prints the DOM they built.
    let document = get(addr, "/openapi.json", None).await.json();
    let profile = dir.join("chromium-profile");
    let dom = dir.join("dom.html");
    let mut command = Command::new(chromium);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        &format!("--user-data-dir={}", profile.display()),
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--virtual-time-budget=30000",
        "--dump-dom",
        &format!("http://{addr}/docs"),
    ]);
    let status = tokio::task::spawn_blocking({
        let dom = dom.clone();
        move || run_bounded(command, &dom, Duration::from_secs(120))
    })
    .await
    .unwrap();
    let (dom, errors) = printed(&dom);
    assert!(
        status.is_some_and(|status| status.success()),
        "chromium failed ({status:?}):\n{errors}"
    );

    // Every operation of the document is on the page, with its summary; the title too.
    assert!(dom.contains("jwt-gate auth service"), "{dom}");
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 5, "{document}");
    for (path, operations) in paths {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "{path} is not on the page:\n{dom}"
        );
        for operation in operations.as_object().unwrap().values() {
            let summary = operation["summary"].as_str().unwrap();
            assert!(
                dom.contains(&html_text(summary)),
                "{summary} is not on the page"
            );
        }
    }
    // And nothing on it is fetched from elsewhere (no validator badge, no CDN).
    for link in resources(&dom) {
        assert!(!elsewhere(&link, addr), "{link} on the page:\n{dom}");
    }
}

/// `text` as it appears in HTML: what the DOM escapes.
fn html_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The test's own reading of HTML: what is fetched, and whether it is fetched from here.
#[test]
fn resources_are_read_and_judged() {
    let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let html = r#"<link rel="x" href="./a.css"><script src="https://cdn.example/x.js"></script><a href="https://elsewhere.example/"><img class="b" src="http://127.0.0.1:9/docs/b.png">"#;
    let found = resources(html);
    assert_eq!(
        found,
        [
            "./a.css",
            "https://cdn.example/x.js",
            "http://127.0.0.1:9/docs/b.png"
        ]
    );
    let away: Vec<bool> = found.iter().map(|link| elsewhere(link, addr)).collect();
    assert_eq!(away, [false, true, false]);
}
