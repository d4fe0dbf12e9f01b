//! The Dockerfile front end of `cairn build`: text in, cairn's own plain
//! types out (the `parse-dockerfile` crate's types stay inside this file).
//!
//! What is kept raw: every word that BuildKit later expands (image names,
//! ENV/LABEL keys and values, ARG defaults, COPY sources and flags,
//! WORKDIR, USER, ...) keeps its quotes and escapes, because Docker removes
//! quotes and substitutes variables in one pass (`expand::word`). Feeding a
//! raw value to [`expand::word`](super::expand::word) with the file's
//! [`Dockerfile::escape`] gives what Docker would use.
//!
//! What is resolved here: line continuations (joined by BuildKit's rules),
//! ENV/LABEL/ARG split into pairs (`ENV k v` and `ENV k=v k2="v 2"`), and
//! RUN heredocs turned into the shell script BuildKit runs. The crate only
//! understands a RUN heredoc that opens the command (`RUN <<EOF`); for the
//! others (`RUN python3 <<EOF`, several heredocs) this file finds the bodies
//! itself, hides them from the crate behind comment lines of the same
//! length (so offsets and line numbers stay true) and parses again.
//!
//! Refused with the line: what cairn cannot build (ONBUILD, HEALTHCHECK,
//! RUN flags, ADD of URLs and git repositories, COPY --exclude/--parents,
//! unknown flags); instructions other than ARG before the first FROM; no
//! FROM at all; duplicate or malformed stage names.

use std::collections::HashMap;

use parse_dockerfile as crate_df;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// The escape character (`\`, or `` ` `` by `# escape=`), which
    /// [`expand::word`](super::expand::word) must be given.
    pub escape: char,
    /// ARGs before the first FROM: usable in FROM lines only.
    pub global_args: Vec<ArgDecl>,
    pub stages: Vec<Stage>,
}

/// `ARG name[=default]`; the default is raw (unexpanded, quotes kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Position among the stages, from 0 (what `COPY --from=0` names).
    pub index: usize,
    /// The image word, raw (`${BASE}:latest` stays so).
    pub from: String,
    /// `AS name`, lowercased (stage names are case-insensitive).
    pub name: Option<String>,
    /// `--platform=...`, raw.
    pub platform: Option<String>,
    /// The FROM instruction's line.
    pub line: usize,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// 1-based line of the instruction's keyword.
    pub line: usize,
    /// The instruction as written, continuations joined (heredoc bodies
    /// left out), for messages.
    pub text: String,
    pub kind: Kind,
}

/// One instruction of a stage. Strings are raw unless said otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Heredocs are already folded into the command: see [`Cmd`].
    Run {
        cmd: Cmd,
    },
    /// COPY, or ADD (`add`) of local sources.
    Copy {
        add: bool,
        sources: Vec<String>,
        dest: String,
        from: Option<String>,
        chown: Option<String>,
        chmod: Option<String>,
        link: bool,
        /// `COPY <<EOF /dest` documents, in order.
        heredocs: Vec<Heredoc>,
    },
    /// `(key, value)` pairs; expand both with `expand::word`.
    Env(Vec<(String, String)>),
    Arg(Vec<ArgDecl>),
    Workdir(String),
    User(String),
    /// `(key, value)` pairs (MAINTAINER becomes `maintainer`); expand both.
    Label(Vec<(String, String)>),
    Cmd(Cmd),
    Entrypoint(Cmd),
    /// The JSON array as decoded.
    Shell(Vec<String>),
    /// One raw word each (`80/tcp`, `$PORT`).
    Expose(Vec<String>),
    /// Paths, raw: BuildKit expands VOLUME's JSON form too.
    Volume(Vec<String>),
    StopSignal(String),
}

/// A command as Docker runs it. Neither form is expanded by BuildKit: the
/// shell form goes to the stage's SHELL (default `/bin/sh -c`) as one
/// argument, the exec form is the argv, JSON-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Shell(String),
    Exec(Vec<String>),
}

/// A COPY/ADD here-document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter, unquoted; the file's name when `dest` is a directory.
    pub name: String,
    /// The body, each line with its newline; leading tabs already removed
    /// for `<<-`.
    pub content: String,
    /// The delimiter was unquoted: BuildKit expands variables (not quotes)
    /// in the body, as [`expand::heredoc`](super::expand::heredoc) does.
    pub expand: bool,
}

/// Why a Dockerfile is refused; each names the line it is about.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DockerfileError {
    /// What the parser crate reports (with its line).
    #[error("Dockerfile:{line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("Dockerfile: no FROM instruction")]
    NoFrom,
    #[error("Dockerfile:{line}: {what} is not supported by cairn build")]
    Unsupported { line: usize, what: String },
    #[error("Dockerfile:{line}: unknown flag --{flag} for {instruction}")]
    UnknownFlag {
        line: usize,
        instruction: &'static str,
        flag: String,
    },
    #[error("Dockerfile:{line}: flag --{flag} needs a value")]
    FlagValue { line: usize, flag: String },
    #[error(
        "Dockerfile:{line}: {path:?} is a URL or git repository: not supported by cairn build (download it in a RUN step, or into the context)"
    )]
    RemoteSource { line: usize, path: String },
    #[error("Dockerfile:{line}: duplicate stage name {name:?} (first at line {first})")]
    DuplicateStage {
        line: usize,
        name: String,
        first: usize,
    },
    #[error(
        "Dockerfile:{line}: invalid stage name {name:?}: must start with a letter and hold only letters, digits, '-', '_' and '.'"
    )]
    StageName { line: usize, name: String },
    #[error("Dockerfile:{line}: {instruction} {message}")]
    Arguments {
        line: usize,
        instruction: &'static str,
        message: String,
    },
    #[error("Dockerfile:{line}: unterminated heredoc {name:?}")]
    UnterminatedHeredoc { line: usize, name: String },
    #[error(
        "Dockerfile:{line}: heredocs of this {instruction} could not be matched to their delimiters"
    )]
    HeredocMismatch {
        line: usize,
        instruction: &'static str,
    },
    #[error(
        "Dockerfile:{line}: a line ends with an escaped escape character and the instruction goes on: ambiguous, not supported"
    )]
    AmbiguousContinuation { line: usize },
}

impl DockerfileError {
    /// The line the error is about (0 for a missing FROM).
    pub fn line(&self) -> usize {
        match self {
            DockerfileError::NoFrom => 0,
            DockerfileError::Syntax { line, .. }
            | DockerfileError::Unsupported { line, .. }
            | DockerfileError::UnknownFlag { line, .. }
            | DockerfileError::FlagValue { line, .. }
            | DockerfileError::RemoteSource { line, .. }
            | DockerfileError::DuplicateStage { line, .. }
            | DockerfileError::StageName { line, .. }
            | DockerfileError::Arguments { line, .. }
            | DockerfileError::UnterminatedHeredoc { line, .. }
            | DockerfileError::HeredocMismatch { line, .. }
            | DockerfileError::AmbiguousContinuation { line } => *line,
        }
    }
}

/// Whether a COPY/ADD source (expanded, or raw where it is obviously so)
/// names something to download rather than a path of the context.
pub fn is_remote_source(source: &str) -> bool {
    let lower = source.trim_start().to_ascii_lowercase();
    ["http://", "https://", "git://", "ssh://", "git@"]
        .iter()
        .any(|p| lower.starts_with(p))
}

/// Parse a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, DockerfileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let escape = escape_directive(text)?;
    let mut parser = Parser {
        text,
        lines: LineIndex::new(text),
        escape,
        masked: text.to_string(),
        run_bodies: HashMap::new(),
    };
    // Each restart hides at least one more RUN's heredoc bodies, so this
    // ends; the bound only documents it.
    for _ in 0..=text.len() {
        match parser.pass()? {
            Pass::Done(dockerfile) => return Ok(dockerfile),
            Pass::Restart => {}
        }
    }
    Err(DockerfileError::Syntax {
        line: 0,
        message: "heredocs could not be resolved".into(),
    })
}

/// The escape character from the parser directives, read by the crate on
/// the leading comment lines alone (a whole-file parse may fail on a RUN
/// heredoc the crate cannot read, and the escape is needed to get there).
fn escape_directive(text: &str) -> Result<char, DockerfileError> {
    let mut head = String::new();
    for line in text.split_inclusive('\n') {
        if !line.starts_with('#') {
            break;
        }
        head.push_str(line);
    }
    if !head.ends_with('\n') && !head.is_empty() {
        head.push('\n');
    }
    head.push_str("FROM scratch\n");
    match crate_df::parse(&head) {
        Ok(df) => Ok(df
            .parser_directives
            .escape
            .map(|e| e.value.value)
            .unwrap_or('\\')),
        Err(e) => Err(syntax(&e)),
    }
}

fn syntax(e: &crate_df::Error) -> DockerfileError {
    if e.line() == 0 {
        return DockerfileError::NoFrom;
    }
    DockerfileError::Syntax {
        line: e.line(),
        message: format!("{e:#}"),
    }
}

enum Pass {
    Done(Dockerfile),
    Restart,
}

struct Parser<'t> {
    text: &'t str,
    lines: LineIndex,
    escape: char,
    /// `text` with the bodies of the RUN heredocs the crate cannot read
    /// turned into comment lines.
    masked: String,
    /// Those bodies, by the byte offset of their RUN.
    run_bodies: HashMap<usize, Vec<Body>>,
}

/// A RUN heredoc body found by this file.
struct Body {
    content: String,
}

/// A heredoc opener found on an instruction's line, BuildKit's way.
#[derive(Debug, Clone, PartialEq)]
struct Marker {
    name: String,
    chomp: bool,
}

impl<'t> Parser<'t> {
    fn pass(&mut self) -> Result<Pass, DockerfileError> {
        let masked = self.masked.clone();
        let iter = crate_df::parse_iter(&masked).map_err(|e| syntax(&e))?;
        let mut global_args = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for item in iter {
            let instruction = item.map_err(|e| syntax(&e))?;
            let start = keyword_span(&instruction).start;
            let line = self.lines.line(start);
            if let crate_df::Instruction::From(from) = &instruction {
                let stage = self.stage(from, stages.len(), line)?;
                if let Some(name) = &stage.name {
                    if let Some(first) = names.insert(name.clone(), line) {
                        return Err(DockerfileError::DuplicateStage {
                            line,
                            name: name.clone(),
                            first,
                        });
                    }
                }
                stages.push(stage);
                continue;
            }
            let head_end = self.lines.line_end(head_span_end(&instruction));
            let text = join_continuations(&self.text[start..head_end], self.escape)
                .map_err(|()| DockerfileError::AmbiguousContinuation { line })?;
            let kind = match self.kind(&instruction, start, line, &text, head_end)? {
                Some(kind) => kind,
                None => return Ok(Pass::Restart),
            };
            let instruction = Instruction { line, text, kind };
            match stages.last_mut() {
                Some(stage) => stage.instructions.push(instruction),
                None => match instruction.kind {
                    Kind::Arg(args) => global_args.extend(args),
                    _ => {
                        return Err(DockerfileError::Syntax {
                            line,
                            message: "expected FROM (only ARG may come before the first FROM)"
                                .into(),
                        });
                    }
                },
            }
        }
        if stages.is_empty() {
            return Err(DockerfileError::NoFrom);
        }
        Ok(Pass::Done(Dockerfile {
            escape: self.escape,
            global_args,
            stages,
        }))
    }

    fn stage(
        &self,
        from: &crate_df::FromInstruction<'_>,
        index: usize,
        line: usize,
    ) -> Result<Stage, DockerfileError> {
        let mut platform = None;
        for flag in &from.options {
            match &*flag.name.value {
                "platform" => platform = Some(flag_value(flag, line)?),
                other => {
                    return Err(DockerfileError::UnknownFlag {
                        line,
                        instruction: "FROM",
                        flag: other.into(),
                    });
                }
            }
        }
        let name = match &from.as_ {
            Some((_, name)) => {
                let lower = name.value.to_lowercase();
                if !valid_stage_name(&lower) {
                    return Err(DockerfileError::StageName {
                        line,
                        name: name.value.to_string(),
                    });
                }
                Some(lower)
            }
            None => None,
        };
        Ok(Stage {
            index,
            from: from.image.value.to_string(),
            name,
            platform,
            line,
            instructions: Vec::new(),
        })
    }

    /// None: bodies were found that the crate could not read; parse again.
    fn kind(
        &mut self,
        instruction: &crate_df::Instruction<'_>,
        start: usize,
        line: usize,
        text: &str,
        head_end: usize,
    ) -> Result<Option<Kind>, DockerfileError> {
        use crate_df::Instruction as I;
        let unsupported = |what: &str| DockerfileError::Unsupported {
            line,
            what: what.into(),
        };
        Ok(Some(match instruction {
            I::Run(run) => {
                if let Some(flag) = run.options.first() {
                    return Err(unsupported(&format!("RUN --{}", flag.name.value)));
                }
                match &run.arguments {
                    crate_df::Command::Exec(argv) => Kind::Run {
                        cmd: Cmd::Exec(argv.value.iter().map(|a| a.value.to_string()).collect()),
                    },
                    crate_df::Command::Shell(_) => {
                        let Some(cmd) = self.run_shell(run, start, line, text, head_end)? else {
                            return Ok(None);
                        };
                        Kind::Run { cmd }
                    }
                    _ => return Err(unsupported("this form of RUN")),
                }
            }
            I::Copy(copy) => self.copy(false, &copy.options, &copy.src, &copy.dest, line, text)?,
            I::Add(add) => self.copy(true, &add.options, &add.src, &add.dest, line, text)?,
            I::Env(env) => Kind::Env(self.pairs("ENV", &env.arguments.value, line)?),
            I::Label(label) => Kind::Label(self.pairs("LABEL", &label.arguments.value, line)?),
            I::Maintainer(m) => Kind::Label(vec![(
                "maintainer".into(),
                literal_word(&m.name.value, self.escape),
            )]),
            I::Arg(arg) => Kind::Arg(
                raw_words(&arg.arguments.value, self.escape, false)
                    .into_iter()
                    .map(|word| match word.split_once('=') {
                        Some((name, default)) => ArgDecl {
                            name: name.into(),
                            default: Some(default.into()),
                        },
                        None => ArgDecl {
                            name: word,
                            default: None,
                        },
                    })
                    .collect(),
            ),
            I::Workdir(w) => Kind::Workdir(w.arguments.value.to_string()),
            I::User(u) => Kind::User(u.arguments.value.to_string()),
            I::Stopsignal(s) => Kind::StopSignal(s.arguments.value.to_string()),
            I::Cmd(c) => Kind::Cmd(command(&c.arguments, text)),
            I::Entrypoint(e) => Kind::Entrypoint(command(&e.arguments, text)),
            I::Shell(s) => Kind::Shell(s.arguments.iter().map(|a| a.value.to_string()).collect()),
            I::Expose(e) => Kind::Expose(e.arguments.iter().map(|a| a.value.to_string()).collect()),
            I::Volume(v) => Kind::Volume(match &v.arguments {
                crate_df::JsonOrStringArray::Json(a) => {
                    a.value.iter().map(|p| p.value.to_string()).collect()
                }
                crate_df::JsonOrStringArray::String(a) => {
                    a.iter().map(|p| p.value.to_string()).collect()
                }
            }),
            I::Healthcheck(_) => return Err(unsupported("HEALTHCHECK")),
            I::Onbuild(_) => return Err(unsupported("ONBUILD")),
            I::From(_) => return Err(unsupported("FROM here")),
            _ => return Err(unsupported("this instruction")),
        }))
    }

    /// BuildKit's `dispatchRun` for the shell form: a lone heredoc is the
    /// script (or, with `#!`, a file to execute); a command with heredocs
    /// gets them back after it, for the shell to feed.
    fn run_shell(
        &mut self,
        run: &crate_df::RunInstruction<'_>,
        start: usize,
        line: usize,
        text: &str,
        head_end: usize,
    ) -> Result<Option<Cmd>, DockerfileError> {
        let cmdline = after_keyword(text);
        let markers = if cmdline.contains("<<") {
            heredoc_markers(cmdline)
        } else {
            Vec::new()
        };
        let by_crate = run.here_docs.len();
        if markers.len() < by_crate {
            return Err(DockerfileError::HeredocMismatch {
                line,
                instruction: "RUN",
            });
        }
        let mut bodies: Vec<String> = run.here_docs.iter().map(|h| h.value.to_string()).collect();
        if markers.len() > by_crate {
            match self.run_bodies.get(&start) {
                Some(found) => bodies.extend(found.iter().map(|b| b.content.clone())),
                None => {
                    // After the RUN line, or after the body the crate read.
                    let from = match run.here_docs.last() {
                        Some(h) => self.lines.line_end(h.span.end),
                        None => head_end,
                    };
                    let found = self.find_bodies(&markers[by_crate..], from, line)?;
                    self.run_bodies.insert(start, found);
                    return Ok(None);
                }
            }
        }
        if markers.is_empty() {
            return Ok(Some(Cmd::Shell(cmdline.to_string())));
        }
        if let (Some(lone), [marker], [body]) = (lone_heredoc(cmdline), &markers[..], &bodies[..]) {
            let data = if lone.chomp {
                chomp(body)
            } else {
                body.clone()
            };
            if data.starts_with("#!") {
                return Ok(Some(Cmd::Shell(script_file(&marker.name, &data))));
            }
            return Ok(Some(Cmd::Shell(data)));
        }
        let mut full = cmdline.to_string();
        for (marker, body) in markers.iter().zip(&bodies) {
            full.push('\n');
            full.push_str(body);
            full.push_str(&marker.name);
        }
        Ok(Some(Cmd::Shell(full)))
    }

    /// Reads the bodies from the original text and hides them in `masked`.
    fn find_bodies(
        &mut self,
        markers: &[Marker],
        mut pos: usize,
        line: usize,
    ) -> Result<Vec<Body>, DockerfileError> {
        let start = pos;
        let mut bodies = Vec::new();
        for marker in markers {
            let mut content = String::new();
            let mut terminated = false;
            while pos < self.text.len() {
                let end = self.lines.line_end(pos);
                let physical = &self.text[pos..end];
                pos = end;
                let mut candidate = physical.trim_end_matches(['\r', '\n']);
                if marker.chomp {
                    candidate = candidate.trim_start_matches('\t');
                }
                if candidate == marker.name {
                    terminated = true;
                    break;
                }
                content.push_str(physical);
            }
            if !terminated {
                return Err(DockerfileError::UnterminatedHeredoc {
                    line,
                    name: marker.name.clone(),
                });
            }
            bodies.push(Body { content });
        }
        let hidden = as_comment_lines(&self.text[start..pos]);
        self.masked.replace_range(start..pos, &hidden);
        Ok(bodies)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &self,
        add: bool,
        options: &[crate_df::Flag<'_>],
        src: &[crate_df::Source<'_>],
        dest: &crate_df::UnescapedString<'_>,
        line: usize,
        text: &str,
    ) -> Result<Kind, DockerfileError> {
        let instruction = if add { "ADD" } else { "COPY" };
        let (mut from, mut chown, mut chmod, mut link) = (None, None, None, false);
        for flag in options {
            let name = &*flag.name.value;
            match name {
                "from" if !add => from = Some(flag_value(flag, line)?),
                "chown" => chown = Some(flag_value(flag, line)?),
                "chmod" => chmod = Some(flag_value(flag, line)?),
                "link" => {
                    link = match flag.value.as_ref().map(|v| &*v.value) {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(other) => {
                            return Err(DockerfileError::Arguments {
                                line,
                                instruction,
                                message: format!("--link={other}: expected true or false"),
                            });
                        }
                    }
                }
                "exclude" | "parents" | "checksum" | "keep-git-dir" | "unpack" => {
                    return Err(DockerfileError::Unsupported {
                        line,
                        what: format!("{instruction} --{name}"),
                    });
                }
                other => {
                    return Err(DockerfileError::UnknownFlag {
                        line,
                        instruction,
                        flag: other.into(),
                    });
                }
            }
        }
        let mut sources = Vec::new();
        let mut documents = Vec::new();
        for source in src {
            match source {
                crate_df::Source::Path(path) => {
                    if is_remote_source(&path.value) {
                        return Err(DockerfileError::RemoteSource {
                            line,
                            path: path.value.to_string(),
                        });
                    }
                    sources.push(path.value.to_string());
                }
                crate_df::Source::HereDoc(h) => documents.push(h),
                _ => {
                    return Err(DockerfileError::Unsupported {
                        line,
                        what: format!("this kind of {instruction} source"),
                    });
                }
            }
        }
        let mut heredocs = Vec::new();
        if !documents.is_empty() {
            let markers = heredoc_markers(after_keyword(text));
            if markers.len() != documents.len() {
                return Err(DockerfileError::HeredocMismatch { line, instruction });
            }
            for (marker, doc) in markers.into_iter().zip(documents) {
                heredocs.push(Heredoc {
                    name: marker.name,
                    content: doc.value.to_string(),
                    expand: doc.expand,
                });
            }
        }
        Ok(Kind::Copy {
            add,
            sources,
            dest: dest.value.to_string(),
            from,
            chown,
            chmod,
            link,
            heredocs,
        })
    }

    /// BuildKit's `parseNameVal`: `KEY name value...` (the rest of the line
    /// is the value) or `KEY n=v n2=v2`, words raw.
    fn pairs(
        &self,
        instruction: &'static str,
        rest: &str,
        line: usize,
    ) -> Result<Vec<(String, String)>, DockerfileError> {
        let words = raw_words(rest, self.escape, false);
        let Some(first) = words.first() else {
            return Err(DockerfileError::Arguments {
                line,
                instruction,
                message: "requires at least one argument".into(),
            });
        };
        if !first.contains('=') {
            let rest = rest.trim_start_matches(is_go_space);
            let Some(split) = rest.find(is_go_space) else {
                return Err(DockerfileError::Arguments {
                    line,
                    instruction,
                    message: "must have two arguments".into(),
                });
            };
            let value = rest[split..].trim_start_matches(is_go_space);
            return Ok(vec![(rest[..split].into(), value.into())]);
        }
        words
            .iter()
            .map(|word| match word.split_once('=') {
                Some((k, v)) => Ok((k.to_string(), v.to_string())),
                None => Err(DockerfileError::Arguments {
                    line,
                    instruction,
                    message: format!(
                        "syntax error: can't find = in {word:?}; must be of the form name=value"
                    ),
                }),
            })
            .collect()
    }
}

/// `reWhitespace` of BuildKit's parser: `[\t\v\f\r ]`.
fn is_go_space(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

fn flag_value(flag: &crate_df::Flag<'_>, line: usize) -> Result<String, DockerfileError> {
    match &flag.value {
        Some(v) if !v.value.is_empty() => Ok(v.value.to_string()),
        _ => Err(DockerfileError::FlagValue {
            line,
            flag: flag.name.value.to_string(),
        }),
    }
}

/// BuildKit: `^[a-z][a-z0-9-_\.]*$` after lowercasing.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn command(cmd: &crate_df::Command<'_>, text: &str) -> Cmd {
    match cmd {
        crate_df::Command::Exec(argv) => {
            Cmd::Exec(argv.value.iter().map(|a| a.value.to_string()).collect())
        }
        _ => Cmd::Shell(after_keyword(text).to_string()),
    }
}

/// The joined instruction without its keyword, trimmed (BuildKit's
/// `splitCommand`); only for instructions without flags.
fn after_keyword(text: &str) -> &str {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(i) => text[i..].trim(),
        None => "",
    }
}

fn keyword_span(instruction: &crate_df::Instruction<'_>) -> std::ops::Range<usize> {
    use crate_df::Instruction as I;
    let keyword = match instruction {
        I::Add(i) => &i.add,
        I::Arg(i) => &i.arg,
        I::Cmd(i) => &i.cmd,
        I::Copy(i) => &i.copy,
        I::Entrypoint(i) => &i.entrypoint,
        I::Env(i) => &i.env,
        I::Expose(i) => &i.expose,
        I::From(i) => &i.from,
        I::Healthcheck(i) => &i.healthcheck,
        I::Label(i) => &i.label,
        I::Maintainer(i) => &i.maintainer,
        I::Onbuild(i) => &i.onbuild,
        I::Run(i) => &i.run,
        I::Shell(i) => &i.shell,
        I::Stopsignal(i) => &i.stopsignal,
        I::User(i) => &i.user,
        I::Volume(i) => &i.volume,
        I::Workdir(i) => &i.workdir,
        _ => return 0..0,
    };
    keyword.span.clone()
}

/// Where the instruction's own line(s) end, heredoc bodies excluded: the
/// furthest span of its keyword, flags and arguments.
fn head_span_end(instruction: &crate_df::Instruction<'_>) -> usize {
    use crate_df::Instruction as I;
    let flags = |options: &[crate_df::Flag<'_>]| options.iter().map(|f| f.span().end).max();
    let command = |c: &crate_df::Command<'_>| match c {
        crate_df::Command::Exec(s) => s.span.end,
        crate_df::Command::Shell(s) => s.span.end,
        _ => 0,
    };
    let sources = |src: &[crate_df::Source<'_>]| {
        src.iter()
            .filter_map(|s| match s {
                crate_df::Source::Path(p) => Some(p.span.end),
                _ => None,
            })
            .max()
    };
    let ends: Vec<Option<usize>> = match instruction {
        I::Add(i) => vec![flags(&i.options), sources(&i.src), Some(i.dest.span.end)],
        I::Copy(i) => vec![flags(&i.options), sources(&i.src), Some(i.dest.span.end)],
        I::Arg(i) => vec![Some(i.arguments.span.end)],
        I::Env(i) => vec![Some(i.arguments.span.end)],
        I::Label(i) => vec![Some(i.arguments.span.end)],
        I::Maintainer(i) => vec![Some(i.name.span.end)],
        I::User(i) => vec![Some(i.arguments.span.end)],
        I::Workdir(i) => vec![Some(i.arguments.span.end)],
        I::Stopsignal(i) => vec![Some(i.arguments.span.end)],
        I::Cmd(i) => vec![Some(command(&i.arguments))],
        I::Entrypoint(i) => vec![Some(command(&i.arguments))],
        I::Run(i) => vec![flags(&i.options), Some(command(&i.arguments))],
        I::Expose(i) => vec![i.arguments.iter().map(|a| a.span.end).max()],
        I::Shell(i) => vec![i.arguments.iter().map(|a| a.span.end).max()],
        I::Volume(i) => vec![match &i.arguments {
            crate_df::JsonOrStringArray::Json(a) => Some(a.span.end),
            crate_df::JsonOrStringArray::String(a) => a.iter().map(|p| p.span.end).max(),
        }],
        I::From(i) => vec![
            Some(i.image.span.end),
            i.as_.as_ref().map(|(_, n)| n.span.end),
        ],
        _ => vec![],
    };
    ends.into_iter()
        .flatten()
        .max()
        .unwrap_or_else(|| keyword_span(instruction).end)
}

/// Byte offsets of line starts, for 1-based line numbers and line ends.
struct LineIndex {
    starts: Vec<usize>,
    len: usize,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex {
            starts,
            len: text.len(),
        }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }

    /// The offset just past the newline that ends the line holding
    /// `offset` (or the end of the text).
    fn line_end(&self, offset: usize) -> usize {
        let line = self.line(offset);
        self.starts.get(line).copied().unwrap_or(self.len)
    }
}

/// BuildKit's line joining: a line whose last non-blank character is the
/// escape (not itself escaped) goes on; comment and blank lines inside an
/// instruction are dropped. Err: the crate went on past a line that
/// BuildKit would have ended (`\\` at the end of a line).
fn join_continuations(raw: &str, escape: char) -> Result<String, ()> {
    let mut out = String::new();
    let mut lines = raw.split('\n').peekable();
    let mut first = true;
    while let Some(line) = lines.next() {
        let line = line.trim_end_matches(['\r', '\n']);
        if !first {
            let t = line.trim_start();
            if t.starts_with('#') || t.is_empty() {
                continue;
            }
        }
        first = false;
        let trimmed = line.trim_end_matches([' ', '\t']);
        if let Some(stripped) = trimmed.strip_suffix(escape) {
            if !stripped.ends_with(escape) {
                out.push_str(stripped);
                continue;
            }
        }
        out.push_str(line);
        let rest_has_content = lines.any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        return if rest_has_content { Err(()) } else { Ok(out) };
    }
    Ok(out)
}

/// BuildKit's `parseWords`: split on whitespace outside quotes, keeping
/// quotes and escapes in the words. `heredoc_space` also keeps the blanks
/// after `<<` in the word, as the lexer that finds heredocs does.
fn raw_words(rest: &str, escape: char, heredoc_space: bool) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            if c == escape && q != '\'' {
                match chars.next() {
                    None => {
                        quote = None;
                        continue;
                    }
                    Some(n) => {
                        word.push(c);
                        word.push(n);
                        continue;
                    }
                }
            }
            word.push(c);
            continue;
        }
        if c.is_whitespace() {
            if in_word && (blank_ok || !word.is_empty()) {
                words.push(std::mem::take(&mut word));
            }
            word.clear();
            in_word = false;
            blank_ok = false;
            continue;
        }
        in_word = true;
        if c == '\'' || c == '"' {
            quote = Some(c);
            blank_ok = true;
        }
        if c == escape {
            match chars.next() {
                None => continue,
                Some(n) => {
                    word.push(c);
                    word.push(n);
                    continue;
                }
            }
        }
        word.push(c);
        if heredoc_space && c == '<' && word.ends_with("<<") {
            while let Some(&b) = chars.peek().filter(|b| matches!(b, ' ' | '\t' | '\r')) {
                word.push(b);
                chars.next();
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// BuildKit's `heredocsFromLine`: the words of the line that are heredoc
/// openers (`<<EOF`, `<<-EOF`, `2<<'EOF'`, `<< EOF`), in order.
fn heredoc_markers(line: &str) -> Vec<Marker> {
    raw_words(line, '\\', true)
        .iter()
        .filter_map(|w| heredoc_word(w))
        .collect()
}

/// `^(\d*)<<(-?)\s*([^<]*)$` where the rest unquotes to a single word.
fn heredoc_word(word: &str) -> Option<Marker> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(['\t', '\n', '\x0c', '\r', ' ']);
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let name = unquote_single_word(rest)?;
    Some(Marker { name, chomp })
}

/// The delimiter's name: quotes removed, `\` escapes applied, `$` kept;
/// None unless it is exactly one word.
fn unquote_single_word(raw: &str) -> Option<String> {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        ch => word.push(ch),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            e @ ('"' | '$' | '\\') => word.push(e),
                            other => {
                                word.push('\\');
                                word.push(other);
                            }
                        },
                        ch => word.push(ch),
                    }
                }
            }
            '\\' => {
                if let Some(e) = chars.next() {
                    word.push(e);
                    in_word = true;
                }
            }
            c if c.is_whitespace() => {
                if in_word && !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    match <[String; 1]>::try_from(words) {
        Ok([name]) => Some(name),
        Err(_) => None,
    }
}

/// `MustParseHeredoc(cmdline)`: the whole command is one heredoc opener.
fn lone_heredoc(cmdline: &str) -> Option<Marker> {
    heredoc_word(cmdline)
}

/// `ChompHeredocContent`: leading tabs off every line.
fn chomp(body: &str) -> String {
    body.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// BuildKit writes a `#!` heredoc to a file and executes it (mounted at
/// `/dev/pipes/NAME`); as one shell command, the script writes it to a
/// temporary file, runs it and removes it, passing on its status.
fn script_file(name: &str, data: &str) -> String {
    let mut delimiter = String::from("CAIRN_HEREDOC_SCRIPT");
    while data.lines().any(|l| l == delimiter) {
        delimiter.push('_');
    }
    let mut body = data.to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    format!(
        "# heredoc {name:?} with a #! line, run as a file as BuildKit does\n\
         cairn_script=$(mktemp) || exit 1\n\
         cat >\"$cairn_script\" <<'{delimiter}'\n\
         {body}{delimiter}\n\
         chmod 0755 \"$cairn_script\" || exit 1\n\
         \"$cairn_script\"\n\
         cairn_status=$?\n\
         rm -f \"$cairn_script\"\n\
         exit \"$cairn_status\""
    )
}

/// The same bytes as comment lines: `#` then blanks, newlines kept, so the
/// crate skips them and every offset stays where it was.
fn as_comment_lines(region: &str) -> String {
    let mut out = String::with_capacity(region.len());
    for line in region.split_inclusive('\n') {
        let (content, newline) = match line.strip_suffix('\n') {
            Some(c) => (c, "\n"),
            None => (line, ""),
        };
        for (i, c) in content.chars().enumerate() {
            let fill = if i == 0 { '#' } else { ' ' };
            out.push(fill);
            out.extend(std::iter::repeat_n(' ', c.len_utf8() - 1));
        }
        out.push_str(newline);
    }
    out
}

/// A value that `expand::word` turns back into exactly `text`: single
/// quotes, with `'` written as quote, escaped quote, quote.
fn literal_word(text: &str, escape: char) -> String {
    let mut out = String::from("'");
    for c in text.chars() {
        if c == '\'' {
            out.push('\'');
            out.push(escape);
            out.push_str("''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::super::expand;
    use super::*;

    fn ok(text: &str) -> Dockerfile {
        parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> DockerfileError {
        match parse(text) {
            Ok(d) => panic!("parsed: {d:?}"),
            Err(e) => e,
        }
    }

    fn kinds(text: &str) -> Vec<Kind> {
        let d = ok(text);
        d.stages
            .into_iter()
            .flat_map(|s| s.instructions)
            .map(|i| i.kind)
            .collect()
    }

    fn run(text: &str) -> Cmd {
        match kinds(text).into_iter().next() {
            Some(Kind::Run { cmd }) => cmd,
            other => panic!("{other:?}"),
        }
    }

    fn no_vars(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn stages_args_and_lines() {
        let d = ok("# syntax=docker/dockerfile:1\n\
                    ARG BASE=debian:12\n\
                    ARG V\n\
                    FROM ${BASE} AS Build\n\
                    RUN make\n\
                    \n\
                    FROM --platform=$BUILDPLATFORM alpine\n\
                    COPY --from=build /out /out\n");
        assert_eq!(d.escape, '\\');
        assert_eq!(
            d.global_args,
            [
                ArgDecl {
                    name: "BASE".into(),
                    default: Some("debian:12".into())
                },
                ArgDecl {
                    name: "V".into(),
                    default: None
                }
            ]
        );
        assert_eq!(d.stages.len(), 2);
        let (a, b) = (&d.stages[0], &d.stages[1]);
        assert_eq!(
            (a.index, a.from.as_str(), a.name.as_deref(), a.line),
            (0, "${BASE}", Some("build"), 4)
        );
        assert_eq!(a.instructions[0].line, 5);
        assert_eq!(a.instructions[0].text, "RUN make");
        assert_eq!(b.platform.as_deref(), Some("$BUILDPLATFORM"));
        assert_eq!(b.line, 7);
        match &b.instructions[0].kind {
            Kind::Copy {
                from,
                sources,
                dest,
                ..
            } => {
                assert_eq!(from.as_deref(), Some("build"));
                assert_eq!(sources, &["/out"]);
                assert_eq!(dest, "/out");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn continuations_joined_like_buildkit() {
        let d = ok(
            "FROM x\nRUN apt-get update && \\\n    # a comment\n\n    apt-get install -y \\\n      curl\nCMD echo hi\n",
        );
        let s = &d.stages[0];
        assert_eq!(
            s.instructions[0].kind,
            Kind::Run {
                cmd: Cmd::Shell("apt-get update &&     apt-get install -y       curl".into())
            }
        );
        assert_eq!(s.instructions[1].line, 7);
        assert_eq!(
            s.instructions[1].kind,
            Kind::Cmd(Cmd::Shell("echo hi".into()))
        );
    }

    #[test]
    fn exec_forms() {
        let k = kinds(
            "FROM x\nRUN [\"/bin/echo\", \"a b\"]\nENTRYPOINT [\"tini\", \"--\"]\nCMD []\nSHELL [\"/bin/bash\", \"-c\"]\n",
        );
        assert_eq!(
            k,
            [
                Kind::Run {
                    cmd: Cmd::Exec(vec!["/bin/echo".into(), "a b".into()])
                },
                Kind::Entrypoint(Cmd::Exec(vec!["tini".into(), "--".into()])),
                Kind::Cmd(Cmd::Exec(vec![])),
                Kind::Shell(vec!["/bin/bash".into(), "-c".into()]),
            ]
        );
    }

    #[test]
    fn env_label_arg_stay_raw_and_expand_like_docker() {
        let k = kinds(
            "FROM x\nENV A=1 B=\"two words\" C=x\\ y\nENV LEGACY value with  spaces\nLABEL \"com.example\"=\"v\" other=$A\nARG X=\"q\" Y\n",
        );
        let Kind::Env(env) = &k[0] else { panic!() };
        assert_eq!(
            env,
            &[
                ("A".into(), "1".into()),
                ("B".into(), "\"two words\"".into()),
                ("C".into(), "x\\ y".into())
            ]
        );
        let e = |raw: &str| expand::word(raw, &no_vars, '\\').unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e(&env[1].1), "two words");
        assert_eq!(e(&env[2].1), "x y");
        assert_eq!(
            k[1],
            Kind::Env(vec![("LEGACY".into(), "value with  spaces".into())])
        );
        let Kind::Label(label) = &k[2] else { panic!() };
        assert_eq!(e(&label[0].0), "com.example");
        assert_eq!(label[1], ("other".into(), "$A".into()));
        assert_eq!(
            k[3],
            Kind::Arg(vec![
                ArgDecl {
                    name: "X".into(),
                    default: Some("\"q\"".into())
                },
                ArgDecl {
                    name: "Y".into(),
                    default: None
                }
            ])
        );
        assert!(matches!(
            err("FROM x\nENV A=1 B\n"),
            DockerfileError::Arguments { line: 2, .. }
        ));
        assert!(matches!(
            err("FROM x\nENV A\n"),
            DockerfileError::Arguments { line: 2, .. }
        ));
    }

    #[test]
    fn maintainer_is_a_literal_label() {
        let k = kinds("FROM x\nMAINTAINER Jo O'Neil \"jo\" <jo@x>\n");
        let Kind::Label(l) = &k[0] else { panic!() };
        assert_eq!(l[0].0, "maintainer");
        assert_eq!(
            expand::word(&l[0].1, &no_vars, '\\').ok().as_deref(),
            Some("Jo O'Neil \"jo\" <jo@x>")
        );
    }

    #[test]
    fn run_heredocs() {
        assert_eq!(
            run("FROM x\nRUN <<EOF\necho a\necho b\nEOF\n"),
            Cmd::Shell("echo a\necho b\n".into())
        );
        assert_eq!(
            run("FROM x\nRUN <<-EOF\n\techo a\n\tEOF\n"),
            Cmd::Shell("echo a\n".into())
        );
        assert_eq!(
            run("FROM x\nRUN python3 <<'EOF'\nprint(\"$HOME\")\nEOF\nRUN true\n"),
            Cmd::Shell("python3 <<'EOF'\nprint(\"$HOME\")\nEOF".into())
        );
        assert_eq!(
            run("FROM x\nRUN <<A cat - /dev/null <<B\na\nA\nb\nB\n"),
            Cmd::Shell("<<A cat - /dev/null <<B\na\nA\nb\nB".into())
        );
        assert_eq!(
            run("FROM x\nRUN cat <<EOF >/etc/x && \\\n  echo done\nhello\nEOF\n"),
            Cmd::Shell("cat <<EOF >/etc/x &&   echo done\nhello\nEOF".into())
        );
        let Cmd::Shell(script) = run("FROM x\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n")
        else {
            panic!()
        };
        assert!(
            script.contains("#!/usr/bin/env python3\nprint(1)\nCAIRN_HEREDOC_SCRIPT\n"),
            "{script}"
        );
        // The instructions after the bodies are still parsed, on their lines.
        let d = ok("FROM x\nRUN cat <<EOF\nRUN not an instruction\nEOF\nUSER nobody\n");
        assert_eq!(d.stages[0].instructions[1].line, 5);
        assert_eq!(
            d.stages[0].instructions[1].kind,
            Kind::User("nobody".into())
        );
        assert!(matches!(
            err("FROM x\nRUN cat <<EOF\nno end\n"),
            DockerfileError::UnterminatedHeredoc { line: 2, .. } | DockerfileError::Syntax { .. }
        ));
    }

    #[test]
    fn copy_heredocs_and_flags() {
        let k = kinds(
            "FROM x\nCOPY --chown=1:2 --chmod=644 --link <<EOF <<'RAW' /etc/\nhello $X\nEOF\nkeep $X\nRAW\n",
        );
        assert_eq!(
            k[0],
            Kind::Copy {
                add: false,
                sources: vec![],
                dest: "/etc/".into(),
                from: None,
                chown: Some("1:2".into()),
                chmod: Some("644".into()),
                link: true,
                heredocs: vec![
                    Heredoc {
                        name: "EOF".into(),
                        content: "hello $X\n".into(),
                        expand: true
                    },
                    Heredoc {
                        name: "RAW".into(),
                        content: "keep $X\n".into(),
                        expand: false
                    },
                ],
            }
        );
        let k = kinds("FROM x\nADD [\"a b\", \"c\", \"/d/\"]\n");
        assert!(
            matches!(&k[0], Kind::Copy { add: true, sources, dest, .. } if sources == &["a b", "c"] && dest == "/d/")
        );
    }

    #[test]
    fn refused_with_their_line() {
        let cases = [
            ("FROM x\nADD https://example.com/f /f\n", 2),
            ("FROM x\nADD git@github.com:a/b.git /src\n", 2),
            ("FROM x\n\nONBUILD RUN true\n", 3),
            ("FROM x\nHEALTHCHECK CMD true\n", 2),
            ("FROM x\nRUN --mount=type=cache,target=/c true\n", 2),
            ("FROM x\nRUN --network=none true\n", 2),
            ("FROM x\nCOPY --exclude=*.md . /\n", 2),
            ("FROM x\nCOPY --parents a/b /\n", 2),
            ("FROM x\nCOPY --bogus a /\n", 2),
            ("FROM x\nFROBNICATE\n", 2),
            ("RUN true\nFROM x\n", 1),
            ("FROM x AS a\nFROM y AS A\n", 2),
            ("FROM x AS 1bad\n", 1),
        ];
        for (text, line) in cases {
            let e = err(text);
            assert_eq!(e.line(), line, "{text:?}: {e}");
            assert!(
                e.to_string().starts_with(&format!("Dockerfile:{line}: ")),
                "{e}"
            );
        }
        assert_eq!(err(""), DockerfileError::NoFrom);
        assert_eq!(err("# just a comment\nARG A\n"), DockerfileError::NoFrom);
        assert!(
            err("FROM x\nHEALTHCHECK NONE\n")
                .to_string()
                .contains("not supported")
        );
    }

    #[test]
    fn escape_directive() {
        let d = ok("# escape=`\nFROM x\nRUN echo a `\n  b\nCOPY C:\\src C:\\dst\n");
        assert_eq!(d.escape, '`');
        assert_eq!(
            d.stages[0].instructions[0].kind,
            Kind::Run {
                cmd: Cmd::Shell("echo a   b".into())
            }
        );
        assert!(
            matches!(&d.stages[0].instructions[1].kind, Kind::Copy { sources, .. } if sources == &["C:\\src"])
        );
    }

    #[test]
    fn remote_sources() {
        assert!(is_remote_source("https://x/y"));
        assert!(is_remote_source("HTTP://x"));
        assert!(is_remote_source("git@github.com:o/r.git"));
        assert!(!is_remote_source("./http/file"));
        assert!(!is_remote_source("src"));
    }

    #[test]
    fn raw_word_splitting() {
        assert_eq!(
            raw_words("a=\"b c\" d=e\\ f", '\\', false),
            ["a=\"b c\"", "d=e\\ f"]
        );
        assert_eq!(raw_words("x=\"\"", '\\', false), ["x=\"\""]);
        assert_eq!(raw_words("cat << EOF", '\\', true), ["cat", "<< EOF"]);
        assert_eq!(
            heredoc_word("<<\"E O\""),
            Some(Marker {
                name: "E O".into(),
                chomp: false
            })
        );
        assert_eq!(
            heredoc_word("2<<-'X'"),
            Some(Marker {
                name: "X".into(),
                chomp: true
            })
        );
        assert_eq!(heredoc_word("cat<<X"), None);
        assert_eq!(heredoc_word("<<"), None);
    }
}
