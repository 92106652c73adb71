//! The docs stay true to the binary and to each other. Every option of
//! `sparklet run` is in `docs/options.md`, and every option written there
//! exists; every environment variable the README and `docs/` name is one
//! sparklet reads, or one on a short list below that says who reads it; the
//! README stays short and links every page of `docs/`; every relative link of
//! the repository's Markdown points at a file, and a heading, that exists.
//!
//! These tests only run the built binary's `--help` and read files: they need
//! no Kafka and no Postgres.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::support::repo_path;

/// What one command's `--help` offers.
#[derive(Debug, Default)]
struct Help {
    /// The whole text.
    text: String,
    /// Its long options, `--name`.
    options: BTreeSet<String>,
    /// The environment variables its options read (`[env: NAME=...]`).
    env: BTreeSet<String>,
}

/// `sparklet ARGS --help`, with an empty environment (so no variable's value
/// shows and nothing set in the shell changes the text).
fn help(args: &[&str]) -> Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_sparklet"))
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .with_context(|| format!("running sparklet {} --help", args.join(" ")))?;
    let text = String::from_utf8(out.stdout)?;
    ensure!(
        out.status.success(),
        "sparklet {} --help failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

/// The subcommands a help text lists under `Commands:` (not `help`).
fn subcommands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every command of the binary, `""` for the binary itself, `"checkpoint show"`
/// for a nested one, found by following `Commands:` from the top.
fn every_help() -> Result<BTreeMap<String, Help>> {
    let mut found = BTreeMap::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args)?;
        for sub in subcommands(&text) {
            todo.push(path.iter().cloned().chain([sub]).collect());
        }
        found.insert(path.join(" "), Help { options: long_options(&text), env: env_names(&text), text });
    }
    ensure!(found.contains_key("run"), "no `run` among sparklet's commands: {:?}", found.keys());
    Ok(found)
}

/// The long options a help text declares: the `--name` at the start of an
/// option's line (`-h, --help`, `--trigger <TRIGGER>`), not those its
/// descriptions mention.
fn long_options(text: &str) -> BTreeSet<String> {
    let mut options = BTreeSet::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('-')) {
        for word in line.split_whitespace() {
            if let Some(name) = word.strip_prefix("--") {
                let name: String = name.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
                if !name.is_empty() {
                    options.insert(format!("--{name}"));
                }
            } else if !(word.starts_with('-') || word.starts_with('<') || word.starts_with('[')) {
                break;
            }
        }
    }
    options
}

/// The variables a help text names as `[env: NAME=value]` or `[env: NAME]`.
fn env_names(text: &str) -> BTreeSet<String> {
    text.split("[env: ")
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
        .collect()
}

/// A Markdown file split into its prose and its code (inline spans and fenced
/// blocks). The prose keeps a space where code was, and keeps line breaks.
struct Markdown {
    prose: String,
    code: Vec<String>,
}

fn split_code(text: &str) -> Markdown {
    let mut prose = String::new();
    let mut code = Vec::new();
    let mut fence: Option<String> = None;
    let mut block = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = &fence {
            if trimmed.starts_with(open.as_str()) {
                code.push(std::mem::take(&mut block));
                fence = None;
            } else {
                block.push_str(line);
                block.push('\n');
            }
            prose.push('\n');
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            let mark = trimmed.chars().next().unwrap_or('`');
            fence = Some(trimmed.chars().take_while(|c| *c == mark).collect());
            prose.push('\n');
            continue;
        }
        // Inline code: a run of n backticks up to the next run of exactly n.
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            prose.push_str(&rest[..start]);
            let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
            let after = &rest[start + ticks..];
            let end = closing_ticks(after, ticks);
            match end {
                Some(end) => {
                    code.push(after[..end].to_string());
                    prose.push(' ');
                    rest = &after[end + ticks..];
                }
                None => {
                    prose.push_str(&rest[start..start + ticks]);
                    rest = after;
                }
            }
        }
        prose.push_str(rest);
        prose.push('\n');
    }
    if fence.is_some() {
        code.push(block);
    }
    Markdown { prose, code }
}

/// Where the next run of exactly `ticks` backticks starts in `text`.
fn closing_ticks(text: &str, ticks: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'`' {
            let run = bytes[i..].iter().take_while(|b| **b == b'`').count();
            if run == ticks {
                return Some(i);
            }
            i += run;
        } else {
            i += 1;
        }
    }
    None
}

fn read(rel: &str) -> Result<String> {
    std::fs::read_to_string(repo_path(rel)).with_context(|| format!("reading {rel}"))
}

/// `README.md` and every `docs/*.md`, as (repo-relative path, text).
fn readme_and_docs() -> Result<Vec<(String, String)>> {
    let mut files = vec![("README.md".to_string(), read("README.md")?)];
    let mut docs: Vec<_> = std::fs::read_dir(repo_path("docs"))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    docs.retain(|name: &String| name.ends_with(".md"));
    docs.sort();
    for name in docs {
        let rel = format!("docs/{name}");
        files.push((rel.clone(), read(&rel)?));
    }
    Ok(files)
}

/// The `--options` written in a Markdown file's code (inline or fenced).
fn options_in_code(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for code in split_code(text).code {
        let mut rest = code.as_str();
        while let Some(at) = rest.find("--") {
            let before_ok = rest[..at].chars().next_back().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-'));
            let name: String = rest[at + 2..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            if before_ok && name.starts_with(|c: char| c.is_ascii_lowercase()) {
                found.insert(format!("--{name}"));
            }
            rest = &rest[at + 2 + name.len()..];
        }
    }
    found
}

#[test]
fn every_run_option_is_documented_and_every_documented_option_exists() -> Result<()> {
    let helps = every_help()?;
    let options_md = read("docs/options.md")?;
    let documented = options_in_code(&options_md);
    // An option is documented by a row of its own: `| `--name ...` | default | meaning |`.
    let rows: BTreeSet<String> = options_md
        .lines()
        .filter_map(|l| l.strip_prefix("| `--"))
        .map(|cell| {
            format!("--{}", cell.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>())
        })
        .collect();

    let run = &helps["run"].options;
    let undocumented: Vec<_> =
        run.iter().filter(|o| !["--help", "--version"].contains(&o.as_str()) && !rows.contains(*o)).collect();
    ensure!(
        undocumented.is_empty(),
        "options of `sparklet run` without a row of their own in docs/options.md: {undocumented:?}"
    );

    let every: BTreeSet<&String> = helps.values().flat_map(|h| &h.options).collect();
    let unknown: Vec<_> = documented.iter().filter(|o| !every.contains(o)).collect();
    ensure!(
        unknown.is_empty(),
        "docs/options.md names options no sparklet command has (commands: {:?}): {unknown:?}",
        helps.keys().collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn every_option_of_every_command_is_documented_somewhere() -> Result<()> {
    let helps = every_help()?;
    let mut documented = BTreeSet::new();
    for (_, text) in readme_and_docs()? {
        documented.extend(options_in_code(&text));
    }
    let mut missing = Vec::new();
    for (command, help) in &helps {
        for option in &help.options {
            if !["--help", "--version"].contains(&option.as_str()) && !documented.contains(option) {
                missing.push(format!("sparklet {command} {option}"));
            }
        }
    }
    ensure!(missing.is_empty(), "options that neither the README nor docs/ mention: {missing:?}");
    Ok(())
}

/// Where a variable that is no command's option is read.
enum ReadBy {
    /// Named in `sparklet --help`'s own text (read by the binary, not by an option).
    TopHelp,
    /// Named in one of these files or folders of the repository, which read or set it.
    Repo(&'static [&'static str]),
    /// Read outside this repository: a library, the C library, the loader,
    /// or a variable the reader sets for an example command.
    Outside,
}

/// Variables the docs may name that no sparklet command takes as an option's
/// `[env: ...]`, with who reads them.
const OTHER_VARIABLES: &[(&str, ReadBy, &str)] = &[
    ("RUST_LOG", ReadBy::TopHelp, "the log filter"),
    ("NO_COLOR", ReadBy::TopHelp, "turns colours off"),
    ("RUST_BACKTRACE", ReadBy::Outside, "Rust's standard library; the docs say a bad option prints none anyway"),
    ("MALLOC_ARENA_MAX", ReadBy::Repo(&["src"]), "glibc's allocator; sparklet sets a default unless it is set"),
    ("MALLOC_MMAP_THRESHOLD_", ReadBy::Repo(&["src"]), "glibc's allocator, as MALLOC_ARENA_MAX"),
    ("LD_PRELOAD", ReadBy::Outside, "the dynamic loader (allocators tried in a benchmark)"),
    ("AWS_ACCESS_KEY_ID", ReadBy::Repo(&["tests/run"]), "object_store's S3 client; tests/run sets it"),
    ("AWS_SECRET_ACCESS_KEY", ReadBy::Repo(&["tests/run"]), "object_store's S3 client; tests/run sets it"),
    ("AWS_REGION", ReadBy::Repo(&["tests/run"]), "object_store's S3 client; tests/run sets it"),
    ("AWS_ENDPOINT", ReadBy::Repo(&["tests/run"]), "object_store's S3 client; tests/run sets it"),
    ("AWS_ALLOW_HTTP", ReadBy::Repo(&["tests/run"]), "object_store's S3 client; tests/run sets it"),
    ("GOOGLE_SERVICE_ACCOUNT", ReadBy::Outside, "object_store's GCS client"),
    ("AZURE_STORAGE_ACCOUNT_NAME", ReadBy::Outside, "object_store's Azure client"),
    ("AZURE_STORAGE_ACCOUNT_KEY", ReadBy::Outside, "object_store's Azure client"),
    ("KAFKA_PASSWORD", ReadBy::Outside, "the example's own variable, read through `--kafka-option ...=env:NAME`"),
    ("ADMIN_URL", ReadBy::Outside, "the example's shell variable for `sparklet setup --database-url`"),
    ("SPARKLET_TEST_KAFKA", ReadBy::Repo(&["tests/it", "tests/kafka/broker"]), "the tests' shared broker"),
    ("SPARKLET_TEST_DATABASE_URL", ReadBy::Repo(&["tests/it"]), "the tests' Postgres"),
    ("SPARKLET_BLESS", ReadBy::Repo(&["tests/it"]), "rewrites the golden file of tests/it/golden.rs"),
    ("SPARKLET_REQUIRE_DOCKER_COMPOSE", ReadBy::Repo(&["tests/run", "tests/it"]), "tests/run makes the test required"),
    ("SPARKLET_REQUIRE_CHROMIUM", ReadBy::Repo(&["tests/run", "tests/it"]), "tests/run makes the test required"),
    ("SPARKLET_REQUIRE_K8S_VALIDATE", ReadBy::Repo(&["tests/run", "tests/it"]), "tests/run makes the test required"),
    ("SPARKLET_REQUIRE_S3", ReadBy::Repo(&["tests/run", "tests/it"]), "tests/run makes the test required"),
];

/// Upper-case words with an underscore that are not environment variables.
const NOT_VARIABLES: &[(&str, &str)] = &[
    ("SASL_SSL", "a value of librdkafka's security.protocol"),
    ("TRY_CAST", "SQL"),
    ("CONCURRENT_TRANSACTIONS", "a Kafka error code"),
    ("O_EXCL", "a flag of open(2)"),
];

/// Words that look like environment variables: upper case, digits and `_`,
/// with at least one `_`, maybe ending in `*` (a family: `SPARKLET_TEST_KAFKA*`).
fn variable_like(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '*'))
        .filter(|w| {
            let bare = w.trim_end_matches('*');
            bare.starts_with(|c: char| c.is_ascii_uppercase())
                && bare.contains('_')
                && bare.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && w.matches('*').count() <= 1
        })
        .map(str::to_string)
        .collect()
}

/// Does the file or folder `rel` (every file below it) contain `needle`?
/// This file does not count: it names them all.
fn repo_mentions(rel: &str, needle: &str) -> Result<bool> {
    let path = repo_path(rel);
    if path == repo_path(file!()) {
        return Ok(false);
    }
    if path.is_file() {
        return Ok(std::fs::read(&path)?.windows(needle.len()).any(|w| w == needle.as_bytes()));
    }
    for entry in std::fs::read_dir(&path).with_context(|| format!("reading {rel}"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if repo_mentions(&format!("{rel}/{name}"), needle)? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[test]
fn every_environment_variable_in_the_docs_is_one_sparklet_reads() -> Result<()> {
    let helps = every_help()?;
    let options_env: BTreeSet<&str> = helps.values().flat_map(|h| &h.env).map(String::as_str).collect();
    let top = &helps[""].text;

    let mut known = options_env.clone();
    for (name, read_by, why) in OTHER_VARIABLES {
        let real = match read_by {
            ReadBy::TopHelp => top.contains(name),
            ReadBy::Repo(places) => {
                places.iter().map(|p| repo_mentions(p, name)).collect::<Result<Vec<_>>>()?.into_iter().any(|b| b)
            }
            ReadBy::Outside => true,
        };
        ensure!(real, "{name} ({why}) is listed as read by {} but is not there", describe(read_by));
        ensure!(!options_env.contains(name), "{name} is an option's variable now: take it off the list");
        known.insert(name);
    }

    let mut unknown = Vec::new();
    for (file, text) in readme_and_docs()? {
        for word in variable_like(&text) {
            if NOT_VARIABLES.iter().any(|(w, _)| *w == word) {
                continue;
            }
            let ok = match word.strip_suffix('*') {
                Some(prefix) => known.iter().any(|k| k.starts_with(prefix)),
                None => known.contains(word.as_str()),
            };
            if !ok {
                unknown.push(format!("{file}: {word}"));
            }
        }
    }
    ensure!(
        unknown.is_empty(),
        "environment variables the docs name that no sparklet command reads ([env: ...] in its --help) \
         and that are not in OTHER_VARIABLES: {unknown:?}"
    );
    Ok(())
}

fn describe(read_by: &ReadBy) -> String {
    match read_by {
        ReadBy::TopHelp => "`sparklet --help`".to_string(),
        ReadBy::Repo(places) => format!("{places:?}"),
        ReadBy::Outside => "something outside the repository".to_string(),
    }
}

/// The `[text](target)` links of a Markdown file's prose (code is skipped).
fn links(text: &str) -> Vec<String> {
    let prose = split_code(text).prose;
    let mut found = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find([')', '\n']).unwrap_or(after.len());
        // A link may carry a title: [text](target "title").
        let target = after[..end].split_whitespace().next().unwrap_or("").trim_matches(['<', '>']);
        found.push(target.to_string());
        rest = &after[end..];
    }
    found
}

/// The anchors of a Markdown file's headings, as GitHub makes them: lower
/// case, letters, digits, `-` and `_` kept, spaces made `-`, the rest dropped;
/// a repeated heading gets `-1`, `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    let mut fence: Option<char> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            let mark = trimmed.chars().next().unwrap_or('`');
            fence = match fence {
                Some(open) if open == mark => None,
                None => Some(mark),
                other => other,
            };
            continue;
        }
        if fence.is_some() {
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug: String = line[hashes..]
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                ' ' => Some('-'),
                _ => None,
            })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        anchors.insert(if *n == 0 { slug.clone() } else { format!("{slug}-{n}") });
        *n += 1;
    }
    anchors
}

/// Every `.md` file of the repository (not under `target` or a hidden folder).
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            if !name.starts_with('.') && name != "target" {
                markdown_files(&path, out)?;
            }
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
    Ok(())
}

/// The problems with one link of `from`, if any.
fn check_link(from: &Path, target: &str) -> Result<Option<String>> {
    if target.is_empty() {
        return Ok(Some("an empty link".to_string()));
    }
    if target.contains("://") || target.starts_with("mailto:") {
        return Ok(None);
    }
    let (file, anchor) = match target.split_once('#') {
        Some((file, anchor)) => (file, Some(anchor)),
        None => (target, None),
    };
    let path = if file.is_empty() { from.to_path_buf() } else { from.parent().unwrap_or(Path::new(".")).join(file) };
    if !path.exists() {
        return Ok(Some(format!("{target}: no such file")));
    }
    if let Some(anchor) = anchor {
        if path.extension().is_some_and(|e| e == "md") {
            let headings = anchors(&std::fs::read_to_string(&path)?);
            if !headings.contains(anchor) {
                return Ok(Some(format!("{target}: no heading #{anchor} (there are {headings:?})")));
            }
        }
    }
    Ok(None)
}

#[test]
fn every_relative_link_in_the_markdown_points_at_a_file_and_heading_that_exist() -> Result<()> {
    let root = repo_path("");
    let mut files = Vec::new();
    markdown_files(&root, &mut files)?;
    files.sort();
    ensure!(files.iter().any(|f| f.ends_with("docs/options.md")), "found no docs: {files:?}");
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        for target in links(&text) {
            if let Some(problem) = check_link(file, &target)? {
                broken.push(format!("{}: {problem}", file.strip_prefix(&root).unwrap_or(file).display()));
            }
        }
    }
    ensure!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    Ok(())
}

#[test]
fn the_readme_has_at_most_200_lines_and_links_every_page_of_docs() -> Result<()> {
    let readme = read("README.md")?;
    let lines = readme.lines().count();
    ensure!(lines <= 200, "README.md has {lines} lines; reference material belongs in docs/");
    let linked: BTreeSet<String> =
        links(&readme).into_iter().map(|l| l.split('#').next().unwrap_or("").to_string()).collect();
    let mut unlinked = Vec::new();
    for (file, _) in readme_and_docs()?.into_iter().skip(1) {
        if !linked.contains(&file) {
            unlinked.push(file);
        }
    }
    ensure!(unlinked.is_empty(), "pages of docs/ the README does not link: {unlinked:?}");
    for target in &linked {
        if !target.contains("://") && !target.is_empty() && !repo_path(target).exists() {
            bail!("README.md links {target}, which does not exist");
        }
    }
    Ok(())
}

#[test]
fn the_markdown_helpers_read_what_they_should() {
    let md = split_code("a `--x` b ``c `--y` d`` e\n```sh\n--z $A_B\n```\n[l](t.md#h) `[n](m)`\n");
    assert_eq!(md.code, ["--x", "c `--y` d", "--z $A_B\n", "[n](m)"]);
    assert_eq!(links("a `--x` b ``c `--y` d`` e\n```sh\n[q](r)\n```\n[l](t.md#h) `[n](m)`\n"), ["t.md#h"]);
    assert_eq!(
        options_in_code("`--a-b KEY=V` and `x--y`, ```--release```"),
        BTreeSet::from(["--a-b".into(), "--release".into()])
    );
    assert_eq!(
        variable_like("`SPARKLET_X=1`, $DATABASE_URL, SASL_SSL, NN_name, SPARKLET_TEST_KAFKA*, HOME"),
        BTreeSet::from(["SPARKLET_X".into(), "DATABASE_URL".into(), "SASL_SSL".into(), "SPARKLET_TEST_KAFKA*".into()])
    );
    let headings =
        anchors("# Options\n## `sparklet run`\n```\n# not a heading\n```\n## On Kubernetes: from 1 to 4\n## Options\n");
    assert_eq!(
        headings,
        BTreeSet::from([
            "options".into(),
            "sparklet-run".into(),
            "on-kubernetes-from-1-to-4".into(),
            "options-1".into()
        ])
    );
    assert_eq!(
        long_options("  -h, --help   Print help\n      --trigger <TRIGGER>\n          a --not-this one [env: SPARKLET_TRIGGER=]\n      --hold [<HOLD>]  see --nor-this\n"),
        BTreeSet::from(["--help".into(), "--trigger".into(), "--hold".into()])
    );
    assert_eq!(
        env_names("x [env: DATABASE_URL] y [env: SPARKLET_A=1]"),
        BTreeSet::from(["DATABASE_URL".into(), "SPARKLET_A".into()])
    );
}
