//! Dependencies between Shoal's top-level modules point one way: from the entry
//! points down through the transports and use-cases to the capabilities and the
//! foundation (docs/architecture.md draws the same layers). This test reads every
//! `crate::…` path in `src/` and fails on a module cycle or on a path that climbs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules by layer, highest first. A module may use modules of its own
/// layer (as long as that makes no cycle) and of any layer below it.
const LAYERS: &[(&str, &[&str])] = &[
    ("entry", &["app", "supervisor"]),
    ("transports", &["http", "realtime"]),
    ("use-cases", &["usecase", "jobs"]),
    ("context", &["state", "events", "backends"]),
    (
        "capabilities",
        &[
            "analytics",
            "auth",
            "cache",
            "presence",
            "pubsub",
            "rate_limit",
            "registry",
            "request_window",
            "session",
            "db",
            "user_directory",
        ],
    ),
    ("clients", &["redis_client", "backend_error"]),
    (
        "foundation",
        &[
            "config",
            "clock",
            "instance",
            "listener",
            "secrets",
            "shutdown",
            "telemetry",
        ],
    ),
];

/// Every `crate::x` (and `crate::{x, y}`) outside comments in the files under
/// `dir`, by the top-level module the file belongs to.
fn dependencies(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).expect("read src") {
            let entry = entry.expect("dir entry");
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = p.strip_prefix(dir).expect("under src");
            let first = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .expect("a file name");
            let module = first.trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("read a source file");
            let used = deps.entry(module.clone()).or_default();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or_default();
                for target in crate_paths(code) {
                    if target != module {
                        used.insert(target);
                    }
                }
            }
        }
    }
    deps
}

/// The top-level module names of the `crate::` paths in one line of code.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or_default();
            found.extend(inner.split(',').filter_map(|item| ident(item.trim())));
        } else if let Some(name) = ident(rest) {
            found.push(name);
        }
    }
    found
}

fn ident(s: &str) -> Option<String> {
    let name: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

#[test]
fn every_module_has_a_layer_and_no_dependency_climbs() {
    let deps = dependencies(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut problems = Vec::new();
    for (module, used) in &deps {
        let Some(own) = layer_of(module) else {
            problems.push(format!("{module} is in no layer of tests/architecture.rs"));
            continue;
        };
        for target in used {
            match layer_of(target) {
                Some(layer) if layer < own => problems.push(format!(
                    "{module} ({}) uses {target} ({}), a layer above it",
                    LAYERS[own].0, LAYERS[layer].0
                )),
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_top_level_modules_have_no_cycle() {
    let deps = dependencies(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // Depth-first search; a module met again while still on the path closes a cycle.
    fn visit<'a>(
        module: &'a str,
        deps: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| *m == module) {
            let mut cycle: Vec<String> = path[at..].iter().map(|m| m.to_string()).collect();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module);
        for next in deps.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, deps, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module);
        None
    }
    let mut done = BTreeSet::new();
    for module in deps.keys() {
        let cycle = visit(module, &deps, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "module cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn grouped_and_plain_paths_are_both_read() {
    assert_eq!(
        crate_paths("use crate::{http, secrets}; let x = crate::db::Db::x();"),
        vec!["http", "secrets", "db"]
    );
}

#[test]
fn the_map_in_lib_rs_names_every_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(root.join("lib.rs")).expect("read src/lib.rs");
    let map: String = lib
        .lines()
        .filter(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let missing: Vec<String> = dependencies(&root)
        .into_keys()
        .filter(|module| !map.contains(&format!("[`{module}`]")))
        .collect();
    assert!(
        missing.is_empty(),
        "src/lib.rs's map does not name: {}",
        missing.join(", ")
    );
}
