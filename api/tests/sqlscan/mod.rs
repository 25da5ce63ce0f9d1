//! A source scan of every SQL text the workspace builds with the `format!`
//! family: which expressions each one interpolates. SQL values are bound
//! as parameters; what may be spliced into SQL text is an identifier, a
//! placeholder list or a number the code chose, never input. The allow-list
//! in `security.rs` names each such expression with the reason it is not
//! input (docs/security-review.md holds the audit).

use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use quote::ToTokens;
use syn::punctuated::Punctuated;
use syn::{Expr, Token};

/// One expression spliced into one SQL text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Splice {
    /// Relative to the workspace root, `/`-separated.
    pub file: String,
    pub line: usize,
    /// The expression as written (tokens, no spaces).
    pub expr: String,
    /// `{x}`, `{x:?}`, ... as it appears in the format string.
    pub spec: String,
    /// The SQL text, shortened.
    pub sql: String,
}

/// Every `.rs` file of the workspace's crates (not `target/`).
pub fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = ["domain", "store", "commands", "projections", "api", "tests"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Does this text read as SQL (a statement or a fragment of one)?
pub fn looks_like_sql(text: &str) -> bool {
    const KEYWORDS: [&str; 22] = [
        "SELECT ",
        "INSERT INTO",
        "UPDATE ",
        "DELETE FROM",
        "CREATE TABLE",
        "CREATE INDEX",
        "CREATE UNIQUE",
        "CREATE SCHEMA",
        "CREATE DATABASE",
        "ALTER TABLE",
        "DROP TABLE",
        "DROP INDEX",
        "DROP SCHEMA",
        "DROP DATABASE",
        "COMMENT ON",
        "VACUUM",
        "PRAGMA ",
        " WHERE ",
        " FROM ",
        "ON CONFLICT",
        "VALUES ",
        "SET search_path",
    ];
    // `${n}`: a numbered placeholder being built.
    KEYWORDS.iter().any(|k| text.contains(k)) || text.contains("${")
}

/// Every splice of every SQL-looking `format!`-family string in `files`.
/// Also returns how many SQL texts were seen (with or without splices).
pub fn scan(root: &Path, files: &[PathBuf]) -> (Vec<Splice>, usize) {
    let mut splices = Vec::new();
    let mut texts = 0;
    for path in files {
        let source = std::fs::read_to_string(path).expect("read");
        let tokens: TokenStream = source
            .parse()
            .unwrap_or_else(|e| panic!("{} does not tokenize: {e}", path.display()));
        let file = path
            .strip_prefix(root)
            .expect("in the workspace")
            .to_string_lossy()
            .replace('\\', "/");
        walk(tokens, &source, &file, &mut splices, &mut texts);
    }
    (splices, texts)
}

const FORMAT_MACROS: [&str; 4] = ["format", "format_args", "write", "writeln"];

fn walk(tokens: TokenStream, source: &str, file: &str, out: &mut Vec<Splice>, texts: &mut usize) {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    for (i, tree) in trees.iter().enumerate() {
        if let TokenTree::Group(group) = tree {
            // A `format!(...)`: the name, `!`, then this group.
            let is_format = i >= 2
                && matches!(&trees[i - 1], TokenTree::Punct(p) if p.as_char() == '!')
                && matches!(&trees[i - 2], TokenTree::Ident(id) if FORMAT_MACROS.contains(&id.to_string().as_str()));
            if is_format && group.delimiter() != Delimiter::None {
                let name = trees[i - 2].to_string();
                format_call(&name, group.stream(), source, file, out, texts);
            }
            walk(group.stream(), source, file, out, texts);
        }
    }
}

fn format_call(name: &str, args: TokenStream, source: &str, file: &str, out: &mut Vec<Splice>, texts: &mut usize) {
    use syn::parse::Parser;
    let Ok(args) = Punctuated::<Expr, Token![,]>::parse_terminated.parse2(args) else {
        return;
    };
    let mut args: Vec<Expr> = args.into_iter().collect();
    if matches!(name, "write" | "writeln") {
        if args.is_empty() {
            return;
        }
        args.remove(0);
    }
    let Some(Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Str(lit),
        ..
    })) = args.first()
    else {
        return;
    };
    let text = lit.value();
    if !looks_like_sql(&text) {
        return;
    }
    *texts += 1;
    let repr = lit.to_token_stream().to_string();
    let line = source
        .find(&repr)
        .map(|at| source[..at].lines().count().max(1))
        .unwrap_or(0);
    let rest = &args[1..];
    let named: Vec<(String, &Expr)> = rest
        .iter()
        .filter_map(|a| match a {
            Expr::Assign(assign) => Some((tokens_of(&assign.left), assign.right.as_ref())),
            _ => None,
        })
        .collect();
    let positional: Vec<&Expr> = rest.iter().filter(|a| !matches!(a, Expr::Assign(_))).collect();
    let mut next = 0;
    let short: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(90)
        .collect();
    for (arg, spec) in placeholders(&text) {
        let expr = if arg.is_empty() {
            let e = positional.get(next).map(|e| tokens_of(e));
            next += 1;
            e
        } else if let Ok(n) = arg.parse::<usize>() {
            positional.get(n).map(|e| tokens_of(e))
        } else {
            Some(
                named
                    .iter()
                    .find(|(n, _)| *n == arg)
                    .map(|(_, e)| tokens_of(e))
                    .unwrap_or(arg.clone()),
            )
        };
        out.push(Splice {
            file: file.to_owned(),
            line,
            expr: expr.unwrap_or_else(|| "<missing argument>".into()),
            spec,
            sql: short.clone(),
        });
    }
}

/// An expression's tokens without the spaces between them (literals kept
/// as written).
fn tokens_of(e: &Expr) -> String {
    fn flat(tokens: TokenStream, out: &mut String) {
        for tree in tokens {
            match tree {
                TokenTree::Group(g) => {
                    let (open, close) = match g.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::None => ("", ""),
                    };
                    out.push_str(open);
                    flat(g.stream(), out);
                    out.push_str(close);
                }
                other => out.push_str(&other.to_string()),
            }
        }
    }
    let mut out = String::new();
    flat(e.to_token_stream(), &mut out);
    out
}

/// The `{arg:spec}` placeholders of a format string: (arg, whole placeholder).
fn placeholders(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' if chars.get(i + 1) == Some(&'{') => i += 2,
            '}' if chars.get(i + 1) == Some(&'}') => i += 2,
            '{' => {
                let end = chars[i..]
                    .iter()
                    .position(|c| *c == '}')
                    .map(|p| i + p)
                    .unwrap_or(chars.len());
                let inner: String = chars[i + 1..end].iter().collect();
                let arg = inner.split(':').next().unwrap_or("").trim().to_owned();
                out.push((arg, format!("{{{inner}}}")));
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    out
}
