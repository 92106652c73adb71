//! The shape of `src/`, checked: the order of the `# Layout` in `src/lib.rs`
//! holds (a module uses only modules listed below it), no import circle
//! crosses folders, files stay under 400 lines and functions under 60.
//!
//! An arrow A -> B means: a file of A names an item of B through a `crate::`
//! path (in a `use` or inline), or through `super::`/`self::` or a child
//! module. Comments and a file's inline `#[cfg(test)] mod` block are
//! skipped. The binary's own files (`main.rs` and what only it declares)
//! are not the library's and are left out of the order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use regex::Regex;

/// Longest file, in lines.
const MAX_FILE_LINES: usize = 400;
/// Longest function, in lines (signature to closing brace).
const MAX_FN_LINES: usize = 60;

/// One `.rs` file of the crate: its module path and text (comments and
/// inline test module removed).
struct SourceFile {
    path: PathBuf,
    module: Vec<String>,
    code: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn read_tree(dir: &Path) -> Result<Vec<SourceFile>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(dir)?.with_extension("");
                let mut module: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
                if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    module.pop();
                }
                let text = std::fs::read_to_string(&path)?;
                files.push(SourceFile { path, module, code: code_of(&text) });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// `text` without comments and without a trailing `#[cfg(test)] mod x { ... }`.
fn code_of(text: &str) -> String {
    let inline_tests = Regex::new(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{").unwrap();
    let text = match inline_tests.find(text) {
        Some(m) => &text[..m.start()],
        None => text,
    };
    Regex::new(r"//[^\n]*").unwrap().replace_all(text, "").into_owned()
}

/// Expands a use tree such as `a::{b, c::{D, E}}` into paths.
fn expand(body: &str) -> Vec<String> {
    let body = body.trim();
    let Some(open) = body.find('{') else { return vec![body.to_string()] };
    let (prefix, inner) = (&body[..open], &body[open + 1..body.rfind('}').unwrap_or(body.len())]);
    let (mut parts, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in inner.chars() {
        match c {
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            '{' => (depth += 1, current.push(c)).1,
            '}' => (depth -= 1, current.push(c)).1,
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts.iter().filter(|p| !p.trim().is_empty()).flat_map(|p| expand(p)).map(|p| format!("{prefix}{p}")).collect()
}

/// The module paths a file names.
fn named_paths(file: &SourceFile) -> Vec<Vec<String>> {
    let uses = Regex::new(r"(?s)\buse\s+((?:crate|self|super)(?:::super)*::.*?|[a-z_][a-z0-9_]*::.*?);").unwrap();
    let inline = Regex::new(r"\b((?:crate|self|super)(?:::super)*(?:::[A-Za-z_][A-Za-z0-9_]*)+)").unwrap();
    let mods = Regex::new(r"(?m)^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;").unwrap();
    let children: BTreeSet<String> = mods.captures_iter(&file.code).map(|c| c[1].to_string()).collect();
    let mut raw: Vec<String> = uses.captures_iter(&file.code).flat_map(|c| expand(&c[1])).collect();
    let rest = uses.replace_all(&file.code, "");
    raw.extend(inline.captures_iter(&rest).map(|c| c[1].to_string()));
    if !children.is_empty() {
        let names = children.iter().cloned().collect::<Vec<_>>().join("|");
        let child_paths = Regex::new(&format!(r"\b((?:{names})::[A-Za-z_][A-Za-z0-9_:]*)")).unwrap();
        raw.extend(child_paths.captures_iter(&rest).map(|c| c[1].to_string()));
    }
    let mut out = Vec::new();
    for path in raw {
        let segs: Vec<String> = path
            .split("::")
            .map(|s| s.split(" as ").next().unwrap_or("").trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let Some(first) = segs.first() else { continue };
        let absolute = match first.as_str() {
            "crate" => segs[1..].to_vec(),
            "self" | "super" => {
                let mut base = file.module.clone();
                let mut rest = segs.as_slice();
                while let Some(s) = rest.first().filter(|s| *s == "self" || *s == "super") {
                    if s == "super" {
                        base.pop();
                    }
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                base
            }
            name if children.contains(name) => file.module.iter().cloned().chain(segs.iter().cloned()).collect(),
            _ => continue,
        };
        out.push(absolute);
    }
    out
}

/// Arrows between files (by index), each resolved to the longest module
/// path that is a file.
fn arrows(files: &[SourceFile]) -> BTreeSet<(usize, usize)> {
    let by_module: BTreeMap<&[String], usize> =
        files.iter().enumerate().map(|(i, f)| (f.module.as_slice(), i)).collect();
    let mut edges = BTreeSet::new();
    for (from, file) in files.iter().enumerate() {
        for path in named_paths(file) {
            let to = (1..=path.len()).rev().find_map(|k| by_module.get(&path[..k]).copied());
            if let Some(to) = to.filter(|&to| to != from) {
                edges.insert((from, to));
            }
        }
    }
    edges
}

/// The library's top-level modules, in the order `src/lib.rs`'s `# Layout`
/// names them (highest first).
fn layout_order(lib: &str) -> Result<Vec<String>> {
    let section = lib.split("//! # Layout").nth(1).context("src/lib.rs has no `# Layout` section")?;
    let declared: BTreeSet<String> = Regex::new(r"(?m)^(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_]+)\s*;")?
        .captures_iter(lib)
        .map(|c| c[1].to_string())
        .collect();
    let (mut order, quoted) = (Vec::new(), Regex::new(r"`([a-z_]+)`")?);
    for line in section.lines().skip(1).take_while(|l| l.starts_with("//!")) {
        for name in quoted.captures_iter(line).map(|c| c[1].to_string()) {
            if declared.contains(&name) && !order.contains(&name) {
                order.push(name);
            }
        }
    }
    let missing: Vec<_> = declared.iter().filter(|m| !order.contains(m)).collect();
    ensure!(missing.is_empty(), "src/lib.rs's # Layout does not place {missing:?}");
    Ok(order)
}

/// Where an arrow goes against the layout: `(from file, to file)`.
fn upward_arrows(files: &[SourceFile], order: &[String]) -> Vec<String> {
    let rank = |f: &SourceFile| f.module.first().and_then(|m| order.iter().position(|o| o == m));
    let mut up = Vec::new();
    for (from, to) in arrows(files) {
        let (Some(a), Some(b)) = (rank(&files[from]), rank(&files[to])) else { continue };
        if a > b {
            up.push(format!("{} -> {}", files[from].path.display(), files[to].path.display()));
        }
    }
    up
}

/// Strongly connected sets of files that span more than one folder.
fn circles_across_folders(files: &[SourceFile]) -> Vec<Vec<String>> {
    let edges = arrows(files);
    let n = files.len();
    let reach = |start: usize| {
        let mut seen = BTreeSet::from([start]);
        let mut stack = vec![start];
        while let Some(v) = stack.pop() {
            for &(_, w) in edges.range((v, 0)..(v + 1, 0)) {
                if seen.insert(w) {
                    stack.push(w);
                }
            }
        }
        seen
    };
    let reaches: Vec<BTreeSet<usize>> = (0..n).map(reach).collect();
    let folder = |f: &SourceFile| {
        let (dir, stem) = (f.path.parent().unwrap().to_path_buf(), f.path.file_stem().unwrap().to_owned());
        if stem != "mod" && dir.join(&stem).is_dir() {
            dir.join(stem)
        } else {
            dir
        }
    };
    let mut circles = BTreeSet::new();
    for v in 0..n {
        let scc: Vec<usize> = (0..n).filter(|&w| reaches[v].contains(&w) && reaches[w].contains(&v)).collect();
        let folders: BTreeSet<PathBuf> = scc.iter().map(|&i| folder(&files[i])).collect();
        if scc.len() > 1 && folders.len() > 1 {
            circles.insert(scc.iter().map(|&i| files[i].path.display().to_string()).collect::<Vec<_>>());
        }
    }
    circles.into_iter().collect()
}

/// Functions longer than [`MAX_FN_LINES`], as `file:line name (N lines)`.
/// rustfmt's layout: a body closes with `}` at the signature's indent.
fn long_functions(path: &Path, text: &str) -> Vec<String> {
    let signature = Regex::new(r"^(\s*)(?:pub(?:\([a-z]+\))?\s+)?(?:const\s+)?(?:async\s+)?fn\s+(\w+)").unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let Some(c) = signature.captures(line) else { continue };
        if line.trim_end().ends_with(';') || line.trim_end().ends_with('}') {
            continue; // a declaration without a body, or a one-line function
        }
        let close = format!("{}}}", &c[1]);
        let Some(end) = (at..lines.len()).find(|&k| lines[k].trim_end() == close) else { continue };
        if end + 1 - at > MAX_FN_LINES {
            long.push(format!("{}:{} {} ({} lines)", path.display(), at + 1, &c[2], end + 1 - at));
        }
    }
    long
}

#[test]
fn every_module_uses_only_modules_below_it_in_the_layout() -> Result<()> {
    let files = read_tree(&src_dir())?;
    let lib = std::fs::read_to_string(src_dir().join("lib.rs"))?;
    let order = layout_order(&lib)?;
    let up = upward_arrows(&files, &order);
    if !up.is_empty() {
        bail!("{} arrows point up the layout {order:?}:\n{}", up.len(), up.join("\n"));
    }
    Ok(())
}

#[test]
fn no_import_circle_crosses_folders() -> Result<()> {
    let circles = circles_across_folders(&read_tree(&src_dir())?);
    ensure!(circles.is_empty(), "import circles across folders:\n{circles:#?}");
    Ok(())
}

#[test]
fn files_stay_under_400_lines_and_functions_under_60() -> Result<()> {
    let mut problems = Vec::new();
    for file in read_tree(&src_dir())? {
        let text = std::fs::read_to_string(&file.path)?;
        let n = text.lines().count();
        if n > MAX_FILE_LINES {
            problems.push(format!("{}: {n} lines", file.path.display()));
        }
        problems.extend(long_functions(&file.path, &text));
    }
    ensure!(problems.is_empty(), "too long:\n{}", problems.join("\n"));
    Ok(())
}

#[test]
fn the_checks_see_an_upward_arrow_a_circle_and_a_long_function() -> Result<()> {
    // The same checks on a small made-up tree: each must find what is wrong.
    let dir = tempfile::tempdir()?;
    let src = dir.path();
    std::fs::create_dir_all(src.join("low"))?;
    std::fs::create_dir_all(src.join("high"))?;
    std::fs::write(
        src.join("lib.rs"),
        "//! # Layout\n//!\n//! - `high`: above\n//! - `low`: below\n\nmod high;\nmod low;\n",
    )?;
    std::fs::write(src.join("high/mod.rs"), "use crate::low::Thing;\n")?;
    std::fs::write(src.join("low/mod.rs"), "pub struct Thing;\nfn f() { crate::high::g(); }\n")?;
    let files = read_tree(src)?;
    let order = layout_order(&std::fs::read_to_string(src.join("lib.rs"))?)?;
    assert_eq!(order, ["high", "low"]);
    let up = upward_arrows(&files, &order);
    assert!(up.len() == 1 && up[0].contains("low/mod.rs -> ") && up[0].ends_with("high/mod.rs"), "{up:?}");
    assert_eq!(circles_across_folders(&files).len(), 1);
    let body = format!("fn long() {{\n{}}}\n", "    let _x = 1;\n".repeat(MAX_FN_LINES));
    assert_eq!(long_functions(Path::new("x.rs"), &body).len(), 1);
    assert!(long_functions(Path::new("x.rs"), "fn short() {\n}\n").is_empty());
    Ok(())
}
