//! A command's arguments as `COMMAND DOCS` describes them (Redis 7's
//! argument specs: name, type, token, flags, nested arguments), read from
//! the syntax line of the command table, so that a command's syntax is
//! written once. redis-cli builds its hints from these.
//!
//! The syntax line's grammar: words separated by spaces; `[...]` is
//! optional; `A|B` inside brackets is one of; `...` repeats what precedes
//! it; an uppercase word is a token, given alone (a flag) or before the
//! argument or arguments it introduces (`EX s`, `AUTH user password`).

use crate::reply::Reply;

/// One argument spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    pub name: String,
    pub kind: Kind,
    pub token: Option<String>,
    pub optional: bool,
    pub multiple: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Key,
    String,
    Integer,
    Double,
    Pattern,
    UnixTime,
    PureToken,
    OneOf(Vec<Arg>),
    Block(Vec<Arg>),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::String => "string",
            Kind::Integer => "integer",
            Kind::Double => "double",
            Kind::Pattern => "pattern",
            Kind::UnixTime => "unix-time",
            Kind::PureToken => "pure-token",
            Kind::OneOf(_) => "oneof",
            Kind::Block(_) => "block",
        }
    }
}

/// What a lowercase word in a syntax line names.
fn kind_of(command: &str, word: &str) -> Kind {
    match word {
        "key" | "newkey" => Kind::Key,
        "pattern" => Kind::Pattern,
        "unix-seconds" | "unix-milliseconds" | "t" => Kind::UnixTime,
        "increment" if command == "incrbyfloat" => Kind::Double,
        "seconds" | "milliseconds" | "s" | "ms" | "index" | "offset" | "start" | "end" | "increment" | "decrement"
        | "numkeys" | "n" | "cursor" | "count" | "timeout" | "id" | "protover" => Kind::Integer,
        _ => Kind::String,
    }
}

/// The arguments of `command` (its table name) from its syntax line; an
/// error names where a line the grammar does not cover goes wrong (the
/// table's test parses every line).
pub fn parse(command: &str, syntax: &str) -> Result<Vec<Arg>, String> {
    let spaced = syntax.replace('[', " [ ").replace(']', " ] ").replace('|', " | ");
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let mut at = 0;
    let mut alts = alternatives(command, &words, &mut at)?;
    // `ID id | ADDR ip:port`: one of, required.
    let args = match alts.len() {
        1 => alts.pop().expect("one"),
        _ => vec![group(alts)],
    };
    match words.get(at) {
        None => Ok(args),
        Some(w) => Err(format!("{command}: {w:?} at word {at} of {syntax:?}")),
    }
}

/// Alternatives separated by `|` up to a closing `]` or the end.
fn alternatives(command: &str, words: &[&str], at: &mut usize) -> Result<Vec<Vec<Arg>>, String> {
    let mut out = vec![sequence(command, words, at)?];
    while words.get(*at) == Some(&"|") {
        *at += 1;
        out.push(sequence(command, words, at)?);
    }
    Ok(out)
}

/// Items up to a `|`, a `]` or the end.
fn sequence(command: &str, words: &[&str], at: &mut usize) -> Result<Vec<Arg>, String> {
    let mut out: Vec<Arg> = Vec::new();
    while let Some(&w) = words.get(*at) {
        match w {
            "|" | "]" => break,
            "..." => {
                *at += 1;
                let last = out.last_mut().ok_or_else(|| format!("{command}: `...` repeats nothing"))?;
                last.multiple = true;
            }
            "[" => {
                *at += 1;
                let mut alts = alternatives(command, words, at)?;
                if words.get(*at) != Some(&"]") {
                    return Err(format!("{command}: `[` without `]`"));
                }
                *at += 1;
                // `[key ...]`, `[key value ...]`: the repetition belongs to
                // the optional whole.
                let mut repeated = false;
                if let [only] = alts.as_mut_slice()
                    && let Some(last) = only.last_mut()
                {
                    repeated = std::mem::take(&mut last.multiple);
                }
                let mut arg = group(alts);
                arg.optional = true;
                arg.multiple = repeated;
                push_folding_repeat(&mut out, arg);
            }
            _ => {
                *at += 1;
                out.push(word(command, w));
            }
        }
    }
    Ok(absorb_tokens(out))
}

/// Pushes `arg`, except that `key [key ...]` (and `field value [field value
/// ...]`) becomes one argument flagged multiple, as Redis describes it, so
/// that redis-cli hints `key [key ...]` and not one more.
fn push_folding_repeat(out: &mut Vec<Arg>, arg: Arg) {
    if arg.multiple && arg.token.is_none() {
        let plain = |a: &Arg| Arg { optional: false, multiple: false, ..a.clone() };
        let repeated: Vec<Arg> = match &arg.kind {
            Kind::Block(inner) => inner.clone(),
            _ => vec![plain(&arg)],
        };
        let n = repeated.len();
        if out.len() >= n && out[out.len() - n..] == repeated[..] {
            out.truncate(out.len() - n);
            out.push(Arg { optional: false, ..arg });
            return;
        }
    }
    out.push(arg);
}

/// One word: a token (uppercase or a digit, as `HELLO 3`) or an argument.
fn word(command: &str, w: &str) -> Arg {
    let is_token =
        w.chars().any(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) && !w.chars().any(|c| c.is_ascii_lowercase());
    if is_token {
        Arg {
            name: w.to_ascii_lowercase(),
            kind: Kind::PureToken,
            token: Some(w.to_string()),
            optional: false,
            multiple: false,
        }
    } else {
        Arg { name: w.to_string(), kind: kind_of(command, w), token: None, optional: false, multiple: false }
    }
}

/// A token followed by the arguments it introduces becomes their token:
/// `EX s` is one argument `s` with the token `EX`; `AUTH user password` a
/// block with the token `AUTH`.
fn absorb_tokens(items: Vec<Arg>) -> Vec<Arg> {
    let mut out: Vec<Arg> = Vec::new();
    let mut items = items.into_iter().peekable();
    while let Some(item) = items.next() {
        let introduces = item.kind == Kind::PureToken
            && items.peek().is_some_and(|next| next.kind != Kind::PureToken && !next.optional && next.token.is_none());
        if !introduces {
            out.push(item);
            continue;
        }
        let mut introduced = Vec::new();
        while let Some(next) = items.next_if(|n| n.kind != Kind::PureToken && !n.optional && n.token.is_none()) {
            introduced.push(next);
        }
        let mut arg = if introduced.len() == 1 {
            introduced.pop().expect("one")
        } else {
            Arg {
                name: item.name.clone(),
                kind: Kind::Block(introduced),
                token: None,
                optional: false,
                multiple: false,
            }
        };
        arg.token = item.token;
        out.push(arg);
    }
    out
}

/// What brackets held: one argument as is, a sequence as a block, choices
/// as one of.
fn group(mut alts: Vec<Vec<Arg>>) -> Arg {
    let single = |mut seq: Vec<Arg>| -> Arg {
        if seq.len() == 1 {
            seq.pop().expect("one")
        } else {
            let name = seq.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join("-");
            Arg { name, kind: Kind::Block(seq), token: None, optional: false, multiple: false }
        }
    };
    if alts.len() == 1 {
        return single(alts.pop().expect("one"));
    }
    let choices: Vec<Arg> = alts.into_iter().map(single).collect();
    // Named by what a user types to choose: `ex|px|keepttl`.
    let chosen_by = |a: &Arg| a.token.as_deref().map_or_else(|| a.name.clone(), str::to_ascii_lowercase);
    let name = choices.iter().map(chosen_by).collect::<Vec<_>>().join("|");
    Arg { name, kind: Kind::OneOf(choices), token: None, optional: false, multiple: false }
}

impl Arg {
    /// The map `COMMAND DOCS` gives for this argument.
    pub fn reply(&self) -> Reply {
        let mut fields = vec![("name", Reply::bulk(self.name.as_str())), ("type", Reply::bulk(self.kind.name()))];
        if self.kind != Kind::PureToken && !matches!(self.kind, Kind::OneOf(_) | Kind::Block(_)) {
            fields.push(("display_text", Reply::bulk(self.name.as_str())));
        }
        if let Some(token) = &self.token {
            fields.push(("token", Reply::bulk(token.as_str())));
        }
        let flags: Vec<Reply> = [(self.optional, "optional"), (self.multiple, "multiple")]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, f)| Reply::Simple(f.to_string()))
            .collect();
        if !flags.is_empty() {
            fields.push(("flags", Reply::array(flags)));
        }
        if let Kind::OneOf(inner) | Kind::Block(inner) = &self.kind {
            fields.push(("arguments", Reply::array(inner.iter().map(Arg::reply).collect())));
        }
        Reply::map(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::table::{COMMANDS, Spec};

    fn arg(name: &str, kind: Kind) -> Arg {
        Arg { name: name.into(), kind, token: None, optional: false, multiple: false }
    }

    fn token(word: &str) -> Arg {
        Arg { token: Some(word.into()), ..arg(&word.to_ascii_lowercase(), Kind::PureToken) }
    }

    fn optional(a: Arg) -> Arg {
        Arg { optional: true, ..a }
    }

    fn with_token(word: &str, a: Arg) -> Arg {
        Arg { token: Some(word.into()), ..a }
    }

    #[test]
    fn every_syntax_line_of_the_table_parses_whole() {
        fn check(s: &Spec) {
            let command = s.name.rsplit('|').next().unwrap_or(s.name);
            // A container's line sums up its subcommands, which have
            // their own.
            if s.subcommands.is_empty()
                && let Err(e) = parse(command, s.syntax)
            {
                panic!("{e}");
            }
            s.subcommands.iter().for_each(check);
        }
        COMMANDS.iter().for_each(check);
        assert!(parse("x", "[a").is_err() && parse("x", "a ]").is_err() && parse("x", "...").is_err());
    }

    #[test]
    fn set_reads_as_redis_describes_it() {
        let got = parse("set", "key value [NX|XX] [GET] [EX s|PX ms|KEEPTTL]").unwrap();
        let want = vec![
            arg("key", Kind::Key),
            arg("value", Kind::String),
            optional(arg("nx|xx", Kind::OneOf(vec![token("NX"), token("XX")]))),
            optional(token("GET")),
            optional(arg(
                "ex|px|keepttl",
                Kind::OneOf(vec![
                    with_token("EX", arg("s", Kind::Integer)),
                    with_token("PX", arg("ms", Kind::Integer)),
                    token("KEEPTTL"),
                ]),
            )),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn repetition_and_nesting() {
        let mset = parse("mset", "key value [key value ...]").unwrap();
        let pair = Kind::Block(vec![arg("key", Kind::Key), arg("value", Kind::String)]);
        assert_eq!(mset, vec![Arg { multiple: true, ..arg("key-value", pair) }]);
        assert_eq!(parse("del", "key [key ...]").unwrap(), vec![Arg { multiple: true, ..arg("key", Kind::Key) }]);
        let eval = parse("eval", "script numkeys [key ...] [arg ...]").unwrap();
        assert_eq!(eval[2], Arg { multiple: true, ..optional(arg("key", Kind::Key)) });
        let hello = parse("hello", "[protover [AUTH username password] [SETNAME clientname]]").unwrap();
        let auth = Arg {
            token: Some("AUTH".into()),
            ..arg("auth", Kind::Block(vec![arg("username", Kind::String), arg("password", Kind::String)]))
        };
        let setname = with_token("SETNAME", arg("clientname", Kind::String));
        let inner = vec![arg("protover", Kind::Integer), optional(auth), optional(setname)];
        assert_eq!(hello, vec![optional(arg("protover-auth-clientname", Kind::Block(inner)))]);
        assert_eq!(parse("incrbyfloat", "key increment").unwrap()[1].kind, Kind::Double);
        let kill = parse("kill", "ID id | ADDR ip:port").unwrap();
        let choices =
            vec![with_token("ID", arg("id", Kind::Integer)), with_token("ADDR", arg("ip:port", Kind::String))];
        assert_eq!(kill, vec![arg("id|addr", Kind::OneOf(choices))]);
    }

    #[test]
    fn an_argument_spec_is_the_map_redis_gives() {
        let ex = optional(with_token("EX", arg("s", Kind::Integer)));
        assert_eq!(
            ex.reply(),
            Reply::map([
                ("name", Reply::bulk("s")),
                ("type", Reply::bulk("integer")),
                ("display_text", Reply::bulk("s")),
                ("token", Reply::bulk("EX")),
                ("flags", Reply::array(vec![Reply::Simple("optional".into())])),
            ])
        );
    }
}
