//! Dockerfile parsing: logical lines, instructions, words and variables.
//!
//! Supported: `FROM`, `RUN`, `COPY`, `ADD`, `ENV`, `ARG`, `WORKDIR`, `USER`,
//! `ENTRYPOINT`, `CMD`, `LABEL`, `EXPOSE`; comments and `\` line
//! continuations; exec (JSON) and shell forms; `$VAR`, `${VAR}`,
//! `${VAR:-default}` and `${VAR:+alt}` where Docker expands them. Anything
//! else is an error naming its line.

use std::collections::BTreeMap;

/// A parse or expansion error, with the Dockerfile line it is about.
#[derive(Debug, thiserror::Error)]
#[error("Dockerfile line {line}: {msg}")]
pub struct ParseError {
    /// 1-based line of the instruction.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

/// A word or variable that does not expand. The doc comment is the message.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// a quote is not closed
    #[error("unterminated quote")]
    UnterminatedQuote,
    /// a `${` is not closed
    #[error("unterminated ${{")]
    UnterminatedBrace,
    /// a `${...}` form that is not a supported variable expression
    #[error("bad variable ${{{0}}}")]
    BadVariable(String),
    /// a word that should be KEY=VALUE
    #[error("expected KEY=VALUE, got {0:?}")]
    NotKeyValue(String),
}

/// A command in exec form (argv) or shell form (one string for `sh -c`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `["prog", "arg"]`
    Exec(Vec<String>),
    /// `prog arg`, run as `/bin/sh -c "prog arg"`.
    Shell(String),
}

impl Command {
    /// The argv to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

/// One instruction, with raw (unexpanded) arguments where expansion
/// depends on the build state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM image [AS name]` (raw image text).
    From(String),
    /// `RUN`
    Run(Command),
    /// `COPY`/`ADD` with their flags; `add` tells which.
    Copy {
        /// Raw source and destination words (the last is the destination).
        args: Vec<String>,
        /// Whether the args came in JSON form (no word splitting).
        json: bool,
        /// `--chown=USER[:GROUP]`
        chown: Option<String>,
        /// `--chmod=OCTAL`
        chmod: Option<String>,
        /// `ADD` rather than `COPY`.
        add: bool,
    },
    /// `ENV` raw text.
    Env(String),
    /// `ARG` raw text.
    Arg(String),
    /// `WORKDIR` raw text.
    Workdir(String),
    /// `USER` raw text.
    User(String),
    /// `ENTRYPOINT`
    Entrypoint(Command),
    /// `CMD`
    Cmd(Command),
    /// `LABEL` raw text.
    Label(String),
    /// `EXPOSE` raw text.
    Expose(String),
}

/// An instruction and its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// The instruction.
    pub instruction: Instruction,
}

fn err(line: usize, msg: impl Into<String>) -> ParseError {
    ParseError {
        line,
        msg: msg.into(),
    }
}

/// Joins continuation lines and drops comments, giving (line, text).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        if cur.is_none() && trimmed.is_empty() {
            continue;
        }
        let body = raw.trim_end();
        let (body, cont) = match body.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (body, false),
        };
        // As in Docker, continuation lines are joined as they are.
        let entry = cur.get_or_insert_with(|| (n, String::new()));
        entry.1.push_str(body);
        if !cont {
            out.extend(cur.take());
        }
    }
    out.extend(cur.take().filter(|(_, s)| !s.trim().is_empty()));
    out
}

fn parse_command(line: usize, rest: &str) -> Result<Command, ParseError> {
    let t = rest.trim();
    if t.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(t) {
            return Ok(Command::Exec(v));
        }
    }
    if t.is_empty() {
        return Err(err(line, "missing command"));
    }
    Ok(Command::Shell(t.to_string()))
}

/// Parses a Dockerfile into steps.
pub fn parse(text: &str) -> Result<Vec<Step>, ParseError> {
    let mut steps = Vec::new();
    for (line, l) in logical_lines(text) {
        let (word, rest) = l
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((l.trim(), ""));
        let rest = rest.trim();
        let instruction = match word.to_ascii_uppercase().as_str() {
            "FROM" => Instruction::From(rest.to_string()),
            "RUN" => Instruction::Run(parse_command(line, rest)?),
            "CMD" => Instruction::Cmd(parse_command(line, rest)?),
            "ENTRYPOINT" => Instruction::Entrypoint(parse_command(line, rest)?),
            "COPY" | "ADD" => parse_copy(line, rest, word.eq_ignore_ascii_case("ADD"))?,
            "ENV" => Instruction::Env(rest.to_string()),
            "ARG" => Instruction::Arg(rest.to_string()),
            "WORKDIR" => Instruction::Workdir(rest.to_string()),
            "USER" => Instruction::User(rest.to_string()),
            "LABEL" => Instruction::Label(rest.to_string()),
            "EXPOSE" => Instruction::Expose(rest.to_string()),
            other => return Err(err(line, format!("unsupported instruction {other}"))),
        };
        if rest.is_empty() {
            return Err(err(line, format!("{word} needs arguments")));
        }
        steps.push(Step { line, instruction });
    }
    if steps.is_empty() {
        return Err(err(1, "empty Dockerfile"));
    }
    Ok(steps)
}

fn parse_copy(line: usize, rest: &str, add: bool) -> Result<Instruction, ParseError> {
    let mut chown = None;
    let mut chmod = None;
    let mut rest = rest.trim();
    while let Some(flag) = rest.strip_prefix("--") {
        let (f, after) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
        match f.split_once('=') {
            Some(("chown", v)) => chown = Some(v.to_string()),
            Some(("chmod", v)) => chmod = Some(v.to_string()),
            _ => return Err(err(line, format!("unsupported flag --{f}"))),
        }
        rest = after.trim_start();
    }
    let (args, json) = match serde_json::from_str::<Vec<String>>(rest) {
        Ok(v) if rest.starts_with('[') => (v, true),
        _ => (vec![rest.to_string()], false),
    };
    Ok(Instruction::Copy {
        args,
        json,
        chown,
        chmod,
        add,
    })
}

/// Splits `s` into words the way Docker does for ENV, LABEL, COPY and the
/// like: whitespace separates words, quotes group and are removed,
/// backslash escapes, and `$VAR` forms expand from `vars` except inside
/// single quotes.
pub fn words(s: &str, vars: &BTreeMap<String, String>) -> Result<Vec<String>, ExpandError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '\'') | (None, '"') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') if i + 1 < chars.len() => {
                i += 1;
                cur.push(chars[i]);
                in_word = true;
            }
            (_, '$') => {
                let (val, next) = expand_at(&chars, i, vars)?;
                cur.push_str(&val);
                in_word = true;
                i = next;
                continue;
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
        i += 1;
    }
    if quote.is_some() {
        return Err(ExpandError::UnterminatedQuote);
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Expands the `$` form at `chars[i]`; returns the value and the index after it.
fn expand_at(
    chars: &[char],
    i: usize,
    vars: &BTreeMap<String, String>,
) -> Result<(String, usize), ExpandError> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if chars.get(i + 1) == Some(&'{') {
        let close = chars[i + 2..]
            .iter()
            .position(|&c| c == '}')
            .ok_or(ExpandError::UnterminatedBrace)?
            + i
            + 2;
        let inner: String = chars[i + 2..close].iter().collect();
        let (name, op) = match inner.find(":-").or_else(|| inner.find(":+")) {
            Some(p) => (&inner[..p], Some((&inner[p..p + 2], &inner[p + 2..]))),
            None => (inner.as_str(), None),
        };
        if name.is_empty() || !name.chars().all(is_name) {
            return Err(ExpandError::BadVariable(inner));
        }
        let val = vars.get(name).filter(|v| !v.is_empty());
        let out = match op {
            None => val.cloned().unwrap_or_default(),
            Some((":-", word)) => val.cloned().unwrap_or_else(|| word.to_string()),
            Some((_, word)) => val.map(|_| word.to_string()).unwrap_or_default(),
        };
        return Ok((out, close + 1));
    }
    let mut j = i + 1;
    while j < chars.len() && is_name(chars[j]) {
        j += 1;
    }
    if j == i + 1 {
        return Ok(("$".into(), i + 1));
    }
    let name: String = chars[i + 1..j].iter().collect();
    Ok((vars.get(&name).cloned().unwrap_or_default(), j))
}

/// Parses `KEY=VALUE ...` (or the legacy `KEY VALUE...` form when
/// `legacy` and there is no `=` in the first word).
pub fn key_values(
    s: &str,
    vars: &BTreeMap<String, String>,
    legacy: bool,
) -> Result<Vec<(String, String)>, ExpandError> {
    let first = s.split_whitespace().next().unwrap_or("");
    if legacy && !first.contains('=') {
        let rest = s.trim_start()[first.len()..].trim();
        let value = words(rest, vars)?.join(" ");
        return Ok(vec![(first.to_string(), value)]);
    }
    words(s, vars)?
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(ExpandError::NotKeyValue(w)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("A".to_string(), "1".to_string()), ("E".into(), "".into())].into()
    }

    #[test]
    fn lines_comments_continuations() {
        let f = "# c\nFROM scratch\n\nRUN echo a \\\n  # inner comment\n  b\ncmd [\"x\", \"y\"]\n";
        let s = parse(f).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].line, 4);
        assert_eq!(
            s[1].instruction,
            Instruction::Run(Command::Shell("echo a   b".into()))
        );
        assert_eq!(
            s[2].instruction,
            Instruction::Cmd(Command::Exec(vec!["x".into(), "y".into()]))
        );
    }

    #[test]
    fn unsupported_names_its_line() {
        let e = parse("FROM scratch\n\nHEALTHCHECK CMD true\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e
            .to_string()
            .contains("line 3: unsupported instruction HEALTHCHECK"));
        assert!(parse("FROM scratch\nCOPY --from=x a b\n").is_err());
        assert!(parse("RUN\n").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn words_quotes_and_expansion() {
        let v = vars();
        assert_eq!(
            words(r#"a "b c" 'd $A' $A ${A} ${B:-x} ${A:+y} ${E:-z} \$A"#, &v).unwrap(),
            ["a", "b c", "d $A", "1", "1", "x", "y", "z", "$A"]
        );
        assert!(words("\"open", &v).is_err());
        assert_eq!(
            key_values(r#"K=v K2="two words" K3=$A"#, &v, true).unwrap(),
            [
                ("K".into(), "v".into()),
                ("K2".into(), "two words".into()),
                ("K3".into(), "1".into())
            ]
        );
        assert_eq!(
            key_values("K some value", &v, true).unwrap(),
            [("K".to_string(), "some value".to_string())]
        );
        assert!(key_values("=x", &v, false).is_err());
    }

    #[test]
    fn copy_flags_and_json() {
        let s = parse("COPY --chown=1:2 [\"a b\", \"/d/\"]\n").unwrap();
        assert_eq!(
            s[0].instruction,
            Instruction::Copy {
                args: vec!["a b".into(), "/d/".into()],
                json: true,
                chown: Some("1:2".into()),
                chmod: None,
                add: false
            }
        );
    }
}
