//! The crate's public API, checked against the committed snapshot `public-api.txt`, so
//! that an item made public by accident fails the tests.
//!
//! The list is built from rustdoc's JSON output (nightly: the pinned toolchain) for the
//! crate with its public features (`check`, `inspect`; `testutil` is hidden and not API):
//! every public path reachable from the root, with its kind and, for functions, its
//! signature; trait implementations are listed by trait. After an intended change,
//! regenerate it with `UPDATE_PUBLIC_API=1 cargo test -p pagealloc --test public_api`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const FEATURES: &str = "check,inspect";

#[test]
fn public_api_matches_the_snapshot() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("public-api");
    let out = Command::new(env!("CARGO"))
        .args([
            "rustdoc",
            "-q",
            "-p",
            "pagealloc",
            "--lib",
            "--features",
            FEATURES,
        ])
        .arg("--target-dir")
        .arg(&target)
        .args(["--", "-Z", "unstable-options", "--output-format", "json"])
        .current_dir(manifest)
        .env_remove("RUSTDOCFLAGS")
        .output()
        .expect("run cargo rustdoc");
    assert!(
        out.status.success(),
        "cargo rustdoc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(target.join("doc/pagealloc.json")).expect("rustdoc JSON");
    let krate: Value = serde_json::from_str(&json).expect("valid JSON");
    let got = render(&krate);

    let snapshot = manifest.join("public-api.txt");
    if std::env::var_os("UPDATE_PUBLIC_API").is_some() {
        std::fs::write(&snapshot, &got).expect("write the snapshot");
        return;
    }
    let want = std::fs::read_to_string(&snapshot).unwrap_or_default();
    if got != want {
        let (g, w): (BTreeSet<&str>, BTreeSet<&str>) =
            (got.lines().collect(), want.lines().collect());
        let added: Vec<_> = g.difference(&w).collect();
        let removed: Vec<_> = w.difference(&g).collect();
        panic!(
            "the public API changed (regenerate with UPDATE_PUBLIC_API=1 if intended)\n\
             added:\n  {}\nremoved:\n  {}",
            added
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("\n  "),
            removed
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("\n  "),
        );
    }
}

/// The sorted list of public items, one a line.
fn render(krate: &Value) -> String {
    let index = &krate["index"];
    let root = krate["root"].to_string();
    let mut lines = BTreeSet::new();
    walk(index, &index[&root], "pagealloc", &mut lines);
    let mut s = String::new();
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    s
}

fn walk(index: &Value, module: &Value, path: &str, out: &mut BTreeSet<String>) {
    for id in module["inner"]["module"]["items"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let item = &index[id.to_string()];
        if item.is_null() {
            continue;
        }
        if let Some(u) = item["inner"].get("use") {
            let target = &index[u["id"].to_string()];
            let name = u["name"].as_str().unwrap_or("?");
            if target.is_null() {
                out.insert(format!(
                    "use {path}::{name} (from another crate: {})",
                    u["source"]
                ));
            } else {
                item_lines(index, target, &format!("{path}::{name}"), out);
            }
            continue;
        }
        if item["visibility"] != "public" {
            continue;
        }
        let name = item["name"].as_str().unwrap_or("?");
        item_lines(index, item, &format!("{path}::{name}"), out);
    }
}

fn item_lines(index: &Value, item: &Value, path: &str, out: &mut BTreeSet<String>) {
    let (kind, inner) = match item["inner"].as_object().and_then(|o| o.iter().next()) {
        Some((k, v)) => (k.as_str(), v),
        None => return,
    };
    match kind {
        "module" => {
            out.insert(format!("mod {path}"));
            walk(index, item, path, out);
        }
        "function" => {
            out.insert(format!("fn {path}{}", sig(inner)));
        }
        "constant" => {
            out.insert(format!("const {path}: {}", ty(&inner["type"])));
        }
        "struct" => {
            out.insert(format!("struct {path}{}", generics(&inner["generics"])));
            let kind = &inner["kind"];
            if let Some(fields) = kind.get("plain").map(|p| &p["fields"]) {
                for f in fields.as_array().into_iter().flatten() {
                    field(index, &index[f.to_string()], path, out);
                }
            }
            if let Some(fields) = kind.get("tuple") {
                for (i, f) in fields.as_array().into_iter().flatten().enumerate() {
                    if !f.is_null() {
                        let fi = &index[f.to_string()];
                        out.insert(format!(
                            "field {path}.{i}: {}",
                            ty(&fi["inner"]["struct_field"])
                        ));
                    }
                }
            }
            impls(index, inner, path, out);
        }
        "enum" => {
            out.insert(format!("enum {path}{}", generics(&inner["generics"])));
            for v in inner["variants"].as_array().into_iter().flatten() {
                let v = &index[v.to_string()];
                let vpath = format!("{path}::{}", v["name"].as_str().unwrap_or("?"));
                out.insert(format!("variant {vpath}"));
                let kind = &v["inner"]["variant"]["kind"];
                if let Some(fields) = kind.get("struct").map(|s| &s["fields"]) {
                    for f in fields.as_array().into_iter().flatten() {
                        field(index, &index[f.to_string()], &vpath, out);
                    }
                }
                if let Some(fields) = kind.get("tuple") {
                    for (i, f) in fields.as_array().into_iter().flatten().enumerate() {
                        if !f.is_null() {
                            let fi = &index[f.to_string()];
                            out.insert(format!(
                                "field {vpath}.{i}: {}",
                                ty(&fi["inner"]["struct_field"])
                            ));
                        }
                    }
                }
            }
            impls(index, inner, path, out);
        }
        other => {
            out.insert(format!("{other} {path}"));
        }
    }
}

fn field(_index: &Value, f: &Value, owner: &str, out: &mut BTreeSet<String>) {
    if f["visibility"] == "public" || f["visibility"] == "default" {
        out.insert(format!(
            "field {owner}.{}: {}",
            f["name"].as_str().unwrap_or("?"),
            ty(&f["inner"]["struct_field"])
        ));
    }
}

fn impls(index: &Value, inner: &Value, path: &str, out: &mut BTreeSet<String>) {
    for id in inner["impls"].as_array().into_iter().flatten() {
        let imp = &index[id.to_string()]["inner"]["impl"];
        if imp.is_null() || !imp["blanket_impl"].is_null() {
            continue;
        }
        if let Some(tr) = imp["trait"].as_object() {
            // Of the traits the compiler implements by itself, only Send and Sync say
            // something a caller relies on.
            let name = tr.get("path").and_then(Value::as_str).unwrap_or("");
            if imp["is_synthetic"] == true && !matches!(name, "Send" | "Sync") {
                continue;
            }
            if name == "StructuralPartialEq" {
                continue;
            }
            let neg = if imp["is_negative"] == true { "!" } else { "" };
            out.insert(format!(
                "impl {neg}{} for {}",
                path_ty(&Value::Object(tr.clone())),
                ty(&imp["for"])
            ));
            continue;
        }
        for it in imp["items"].as_array().into_iter().flatten() {
            let it = &index[it.to_string()];
            if it["visibility"] != "public" {
                continue;
            }
            let name = it["name"].as_str().unwrap_or("?");
            let inner = &it["inner"];
            if let Some(f) = inner.get("function") {
                out.insert(format!("fn {path}::{name}{}", sig(f)));
            } else if let Some(c) = inner.get("assoc_const") {
                out.insert(format!("const {path}::{name}: {}", ty(&c["type"])));
            } else {
                out.insert(format!("item {path}::{name}"));
            }
        }
    }
}

fn sig(f: &Value) -> String {
    let s = &f["sig"];
    let header = &f["header"];
    let mut out = String::new();
    out += &generics(&f["generics"]);
    let args: Vec<String> = s["inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let name = a[0].as_str().unwrap_or("_");
            let t = ty(&a[1]);
            match (name, t.as_str()) {
                ("self", "Self") => "self".into(),
                ("self", "&Self") => "&self".into(),
                ("self", "&mut Self") => "&mut self".into(),
                _ => format!("{name}: {t}"),
            }
        })
        .collect();
    out += &format!("({})", args.join(", "));
    if !s["output"].is_null() {
        out += &format!(" -> {}", ty(&s["output"]));
    }
    if header["is_const"] == true {
        out = format!("{out} [const]");
    }
    out
}

fn generics(g: &Value) -> String {
    let params: Vec<String> = g["params"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            // Skip the synthetic parameters of `impl Trait` arguments.
            p["kind"]["type"]["is_synthetic"] != true
        })
        .map(|p| p["name"].as_str().unwrap_or("?").to_string())
        .collect();
    if params.is_empty() {
        String::new()
    } else {
        format!("<{}>", params.join(", "))
    }
}

fn path_ty(p: &Value) -> String {
    // The last segment only: where a type is defined inside the crate is not API.
    let name = p["path"]
        .as_str()
        .unwrap_or("?")
        .rsplit("::")
        .next()
        .unwrap_or("?");
    format!("{name}{}", generic_args(&p["args"]))
}

fn generic_args(a: &Value) -> String {
    let Some(ab) = a.get("angle_bracketed") else {
        if let Some(par) = a.get("parenthesized") {
            let ins: Vec<String> = par["inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(ty)
                .collect();
            let o = if par["output"].is_null() {
                String::new()
            } else {
                format!(" -> {}", ty(&par["output"]))
            };
            return format!("({}){o}", ins.join(", "));
        }
        return String::new();
    };
    let mut parts: Vec<String> = ab["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            if let Some(t) = g.get("type") {
                ty(t)
            } else if let Some(l) = g.get("lifetime") {
                l.as_str().unwrap_or("'_").to_string()
            } else if let Some(c) = g.get("const") {
                c["expr"].as_str().unwrap_or("_").to_string()
            } else {
                "_".into()
            }
        })
        .collect();
    for c in ab["constraints"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("?");
        if let Some(t) = c["binding"].get("equality").and_then(|e| e.get("type")) {
            parts.push(format!("{name} = {}", ty(t)));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("<{}>", parts.join(", "))
    }
}

fn bounds(b: &Value) -> String {
    let parts: Vec<String> = b
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            if let Some(t) = b.get("trait_bound") {
                path_ty(&t["trait"])
            } else if let Some(l) = b.get("outlives") {
                l.as_str().unwrap_or("'_").to_string()
            } else if let Some(u) = b.get("use") {
                let names: Vec<String> = u
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| {
                        x.get("lifetime")
                            .or_else(|| x.get("param"))
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_string()
                    })
                    .collect();
                format!("use<{}>", names.join(", "))
            } else {
                "?".into()
            }
        })
        .collect();
    parts.join(" + ")
}

fn ty(t: &Value) -> String {
    let Some((kind, v)) = t.as_object().and_then(|o| o.iter().next()) else {
        return "?".into();
    };
    match kind.as_str() {
        "resolved_path" => path_ty(v),
        "generic" | "primitive" => v.as_str().unwrap_or("?").to_string(),
        "borrowed_ref" => {
            let lt = v["lifetime"]
                .as_str()
                .map(|l| format!("{l} "))
                .unwrap_or_default();
            let m = if v["is_mutable"] == true { "mut " } else { "" };
            format!("&{lt}{m}{}", ty(&v["type"]))
        }
        "raw_pointer" => {
            let m = if v["is_mutable"] == true {
                "mut"
            } else {
                "const"
            };
            format!("*{m} {}", ty(&v["type"]))
        }
        "slice" => format!("[{}]", ty(v)),
        "array" => format!("[{}; {}]", ty(&v["type"]), v["len"].as_str().unwrap_or("?")),
        "tuple" => {
            let ts: Vec<String> = v.as_array().into_iter().flatten().map(ty).collect();
            format!("({})", ts.join(", "))
        }
        "impl_trait" => format!("impl {}", bounds(v)),
        "dyn_trait" => {
            let ts: Vec<String> = v["traits"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| path_ty(&p["trait"]))
                .collect();
            let lt = v["lifetime"]
                .as_str()
                .map(|l| format!(" + {l}"))
                .unwrap_or_default();
            format!("dyn {}{lt}", ts.join(" + "))
        }
        "qualified_path" => format!(
            "<{} as {}>::{}",
            ty(&v["self_type"]),
            if v["trait"].is_null() {
                "?".into()
            } else {
                path_ty(&v["trait"])
            },
            v["name"].as_str().unwrap_or("?")
        ),
        other => format!("<{other}>"),
    }
}
