//! Settings from a TOML configuration file and from the environment, layered under the command
//! line: **command-line flags > environment (`ECSPEC_<FLAG>`) > configuration file > defaults**.
//!
//! The layers are applied before clap parses anything, by rewriting the argument list
//! ([`layer`]): the subcommand path is found (`generate`, `cloud serve`, `edge serve`), and for
//! every flag of that command the user did not give on the command line (in its long, short or
//! `--flag=value` form), a setting from the environment or else from the file is inserted
//! right after the path as `--flag=value`. Flags are discovered from clap's [`Command`]
//! (nothing here names one), so a flag added to a configurable command is configurable at once;
//! each value is checked by that flag's own value parser, and an error names where it came
//! from. [`effective`] is the merged result flag by flag with its [`Source`]
//! (`ecspec config print`).
//!
//! The file has one section per command path; keys are long flag names (`max-tokens` or
//! `max_tokens`); a string or number is the flag's value, `true` gives a switch (`false`
//! leaves it off), an array repeats a repeatable flag:
//!
//! ```toml
//! [generate]
//! cloud = "cloud.example:7878"
//! max-tokens = 64
//! no-link = true
//! outage = ["2:1", "5:0.5"]
//!
//! [cloud.serve]
//! listen = "0.0.0.0:7878"
//! kv_budget = "2GiB"
//! ```
//!
//! The file is `--config FILE` (a global flag), else `$ECSPEC_CONFIG`. An environment variable
//! sets one value of one flag of the command being run: `ECSPEC_MAX_TOKENS=32`,
//! `ECSPEC_CLOUD=host:port`, `ECSPEC_NO_LINK=1` (switches take `1/true/yes/on` or
//! `0/false/no/off`; an empty variable counts as unset). Variables ECSpec reads for other
//! purposes ([`RESERVED_ENV`]) are never read as flags. A switch the file turns on cannot be
//! turned off by a flag (there is no `--no-…`), but its variable can (`ECSPEC_JSON=0`). A
//! setting from a lower layer that conflicts with a flag from a higher one (`prompt-file` in
//! the file, `--prompt` on the command line) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue};
use clap::{Arg, ArgAction, ArgMatches, ColorChoice, Command};

/// The environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "ECSPEC_CONFIG";

/// The global flag naming the configuration file (`--config FILE`).
pub const CONFIG_FLAG: &str = "config";

/// The prefix of a flag's environment variable: `--max-tokens` is `ECSPEC_MAX_TOKENS`.
pub const ENV_PREFIX: &str = "ECSPEC_";

/// The commands a configuration file and the environment configure, by command path; the
/// file's section for each is the path joined with dots (`[cloud.serve]`). A path this build's
/// command tree lacks is skipped.
pub const CONFIGURABLE: &[&[&str]] = &[&["generate"], &["cloud", "serve"], &["edge", "serve"]];

/// Environment variables ECSpec reads for other purposes (the cache, the shared data, the
/// kernels, tests): never read as a flag's value, whatever flags a command grows.
/// `ECSPEC_THREADS` is not among them: it is `--threads`'s variable, the same meaning.
pub const RESERVED_ENV: &[&str] = &[
    "ECSPEC_CONFIG",
    "ECSPEC_CACHE_DIR",
    "ECSPEC_DATA_DIR",
    "ECSPEC_FAMILIES_DIR",
    "ECSPEC_TRAIN_DIR",
    "ECSPEC_KERNELS",
    "ECSPEC_PYTHON",
    "ECSPEC_STREAM_MARGIN",
    "ECSPEC_WARMUP_TOKENS",
    "ECSPEC_BIN",
];

/// Looks up an environment variable (`|k| std::env::var_os(k)` for the process's own).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Given on the command line.
    CommandLine,
    /// The flag's environment variable.
    Env {
        /// Its name (`ECSPEC_MAX_TOKENS`).
        var: String,
    },
    /// The configuration file.
    Config {
        /// The file.
        file: PathBuf,
        /// The section (`cloud.serve`).
        section: String,
        /// The key as written (`max_tokens`).
        key: String,
    },
    /// The flag's default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::CommandLine => write!(f, "flag"),
            Source::Env { var } => write!(f, "env {var}"),
            Source::Config { file, section, .. } => {
                write!(f, "config {} [{section}]", file.display())
            }
            Source::Default => write!(f, "default"),
        }
    }
}

/// A flag's setting in one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A switch, on (the bare flag) or off (left out).
    Switch(bool),
    /// A flag's values, one occurrence each (one value unless the flag repeats).
    Values(Vec<String>),
}

/// One flag's setting and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The flag's long name (`max-tokens`).
    pub flag: String,
    /// Its value.
    pub value: Value,
    /// Where it came from.
    pub source: Source,
}

/// Why the configuration could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("reading the configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("the configuration file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A section that names no configurable command.
    #[error("the configuration file {}: [{section}] is not a command ECSpec reads settings for{hint}; the sections are {}", path.display(), sections(known))]
    UnknownSection {
        path: PathBuf,
        section: String,
        /// ` (did you mean [cloud.serve]?)`, or empty.
        hint: String,
        known: Vec<String>,
    },
    /// A key outside every section.
    #[error("the configuration file {}: `{key}` is outside any section: put it under one of {}", path.display(), sections(known))]
    KeyOutsideSection {
        path: PathBuf,
        key: String,
        known: Vec<String>,
    },
    /// A key that names no flag of its section's command.
    #[error("the configuration file {}: [{section}] `{key}` is not a flag of `{command}`{hint}", path.display())]
    UnknownKey {
        path: PathBuf,
        section: String,
        key: String,
        command: String,
        /// Where the flag does belong, close matches, or empty.
        hint: String,
    },
    /// A value of the wrong type, or one the flag refuses.
    #[error("the configuration file {}: [{section}] `{key}`: {reason}", path.display())]
    BadValue {
        path: PathBuf,
        section: String,
        key: String,
        reason: String,
    },
    /// An environment variable's value that its flag refuses.
    #[error("{var}={value:?}: {reason}")]
    BadEnv {
        var: String,
        value: String,
        reason: String,
    },
    /// [`effective`] asked for a command that takes no configuration.
    #[error("`{command}` takes no settings from a configuration file or the environment; these do: {}", known.join(", "))]
    NotConfigurable { command: String, known: Vec<String> },
    /// The merged command line does not parse (a required flag missing, two that conflict).
    #[error("{message}")]
    CommandLine { message: String },
}

fn sections(known: &[String]) -> String {
    known
        .iter()
        .map(|s| format!("[{s}]"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a flag takes its setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No value: on or off.
    Switch,
    /// One value.
    One,
    /// Repeatable: one value per occurrence.
    Many,
}

/// A configurable flag of a command: an option with a long name (not `--help`, `--version`
/// or `--config`).
#[derive(Clone, Copy)]
struct Flag<'a> {
    arg: &'a Arg,
    long: &'a str,
    kind: Kind,
}

fn kind_of(arg: &Arg) -> Option<Kind> {
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count => Some(Kind::Switch),
        ArgAction::Set => Some(Kind::One),
        ArgAction::Append => Some(Kind::Many),
        _ => None,
    }
}

/// The configurable flags of `cmd` (built: global flags propagated), in declaration order.
fn flags(cmd: &Command) -> Vec<Flag<'_>> {
    cmd.get_arguments()
        .filter(|a| !a.is_positional() && a.get_id() != CONFIG_FLAG)
        .filter_map(|arg| {
            Some(Flag {
                arg,
                long: arg.get_long()?,
                kind: kind_of(arg)?,
            })
        })
        .collect()
}

/// The flag `name` (a long name or alias, `_` read as `-`).
fn find_flag<'a>(flags: &[Flag<'a>], name: &str) -> Option<Flag<'a>> {
    let name = name.replace('_', "-");
    flags.iter().copied().find(|f| {
        f.long == name
            || f.arg
                .get_all_aliases()
                .is_some_and(|a| a.iter().any(|a| *a == name))
    })
}

/// `--max-tokens` → `ECSPEC_MAX_TOKENS`.
pub fn env_var_name(long: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        long.replace('-', "_").to_ascii_uppercase()
    )
}

/// The configurable commands this command tree has: (path, command), in [`CONFIGURABLE`]'s
/// order.
fn configurable(root: &Command) -> Vec<(Vec<String>, &Command)> {
    CONFIGURABLE
        .iter()
        .filter_map(|path| {
            let mut cmd = root;
            for name in *path {
                cmd = cmd.find_subcommand(name)?;
            }
            Some((path.iter().map(|s| s.to_string()).collect(), cmd))
        })
        .collect()
}

fn built(mut root: Command) -> Command {
    root.build();
    root
}

/// A parsed, checked configuration file: per section, each flag's value.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    /// Section (`cloud.serve`) → flag long name → (value, key as written).
    sections: BTreeMap<String, BTreeMap<String, (Value, String)>>,
}

impl ConfigFile {
    /// Reads and checks the file at `path` against `root`'s configurable commands.
    ///
    /// # Errors
    /// The file cannot be read or is not TOML; an unknown section or key, a wrong type, or a
    /// value the flag refuses ([`ConfigError`], naming the file, section and key).
    pub fn load(path: &Path, root: Command) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text, root)
    }

    /// [`Self::load`] from the file's text.
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn parse(path: &Path, text: &str, root: Command) -> Result<Self, ConfigError> {
        let root = built(root);
        Self::parse_built(path, text, &root)
    }

    fn parse_built(path: &Path, text: &str, root: &Command) -> Result<Self, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            })?;
        let mut file = ConfigFile {
            path: path.to_path_buf(),
            sections: BTreeMap::new(),
        };
        let commands = configurable(root);
        file.walk(root, &commands, &table, &[])?;
        Ok(file)
    }

    /// Reads the tables under `prefix` (a command path's first names).
    fn walk(
        &mut self,
        root: &Command,
        commands: &[(Vec<String>, &Command)],
        table: &toml::Table,
        prefix: &[String],
    ) -> Result<(), ConfigError> {
        let known: Vec<String> = commands.iter().map(|(p, _)| p.join(".")).collect();
        let file = self.path.clone();
        for (key, value) in table {
            let mut path = prefix.to_vec();
            path.push(key.clone());
            let section = path.join(".");
            let unknown = |name: &str| ConfigError::UnknownSection {
                path: file.clone(),
                section: name.to_string(),
                hint: closest(name, known.iter().map(String::as_str))
                    .map(|s| format!(" (did you mean [{s}]?)"))
                    .unwrap_or_default(),
                known: known.clone(),
            };
            let toml::Value::Table(inner) = value else {
                if prefix.is_empty() {
                    return Err(ConfigError::KeyOutsideSection {
                        path: file.clone(),
                        key: key.clone(),
                        known,
                    });
                }
                return Err(unknown(&prefix.join(".")));
            };
            if let Some((_, cmd)) = commands.iter().find(|(p, _)| *p == path) {
                self.read_section(root, cmd, &section, inner)?;
            } else if commands.iter().any(|(p, _)| p.starts_with(&path)) {
                self.walk(root, commands, inner, &path)?;
            } else {
                return Err(unknown(&section));
            }
        }
        Ok(())
    }

    fn read_section(
        &mut self,
        root: &Command,
        cmd: &Command,
        section: &str,
        table: &toml::Table,
    ) -> Result<(), ConfigError> {
        let flags = flags(cmd);
        let command = section.replace('.', " ");
        let mut entries: BTreeMap<String, (Value, String)> = BTreeMap::new();
        for (key, raw) in table {
            let bad = |reason: String| ConfigError::BadValue {
                path: self.path.clone(),
                section: section.to_string(),
                key: key.clone(),
                reason,
            };
            let Some(flag) = find_flag(&flags, key) else {
                return Err(ConfigError::UnknownKey {
                    path: self.path.clone(),
                    section: section.to_string(),
                    key: key.clone(),
                    command: command.clone(),
                    hint: unknown_key_hint(root, &flags, key),
                });
            };
            if let Some((_, first)) = entries.get(flag.long) {
                return Err(bad(format!(
                    "`--{}` is already set by `{first}`",
                    flag.long
                )));
            }
            let value = toml_value(flag, raw).map_err(&bad)?;
            if let Value::Values(vs) = &value {
                for v in vs {
                    check_value(cmd, flag, v).map_err(&bad)?;
                }
            }
            entries.insert(flag.long.to_string(), (value, key.clone()));
        }
        self.sections.insert(section.to_string(), entries);
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sections the file holds (`generate`, `cloud.serve`).
    pub fn section_names(&self) -> impl Iterator<Item = &str> {
        self.sections.keys().map(String::as_str)
    }

    /// The value of flag `long` in `section`, and the key as written.
    fn get(&self, section: &str, long: &str) -> Option<&(Value, String)> {
        self.sections.get(section)?.get(long)
    }
}

/// Where an unknown key does belong (another command's flag) and the close matches.
fn unknown_key_hint(root: &Command, flags: &[Flag<'_>], key: &str) -> String {
    if key.replace('_', "-") == CONFIG_FLAG {
        return ": a configuration file cannot name another one".into();
    }
    let mut hint = String::new();
    let elsewhere = commands_with_flag(root, &key.replace('_', "-"));
    if !elsewhere.is_empty() {
        hint += &format!(
            " (it is a flag of {})",
            elsewhere
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let close = close_matches(key, flags.iter().map(|f| f.long));
    if !close.is_empty() {
        hint += &format!(
            "; did you mean {}?",
            close
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
    }
    hint
}

/// The command paths (`cloud serve`) with a flag called `long`.
fn commands_with_flag(root: &Command, long: &str) -> Vec<String> {
    fn visit(cmd: &Command, path: &mut Vec<String>, long: &str, out: &mut Vec<String>) {
        if !path.is_empty() && cmd.get_subcommands().next().is_none() {
            let has = cmd
                .get_arguments()
                .any(|a| a.get_long() == Some(long) && !a.is_global_set());
            if has {
                out.push(path.join(" "));
            }
        }
        for sub in cmd.get_subcommands() {
            path.push(sub.get_name().to_string());
            visit(sub, path, long, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    visit(root, &mut Vec::new(), long, &mut out);
    out
}

/// A TOML value as a flag's setting.
fn toml_value(flag: Flag<'_>, raw: &toml::Value) -> Result<Value, String> {
    let scalar = |v: &toml::Value| -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(x) => Some(x.to_string()),
            _ => None,
        }
    };
    match (flag.kind, raw) {
        (Kind::Switch, toml::Value::Boolean(b)) => Ok(Value::Switch(*b)),
        (Kind::Switch, other) => Err(format!(
            "`--{}` is a switch: write true or false, not {}",
            flag.long,
            type_name(other)
        )),
        (_, toml::Value::Boolean(_)) => Err(format!(
            "`--{}` takes a value ({}); true and false are for switches",
            flag.long,
            value_name(flag.arg)
        )),
        (Kind::One, toml::Value::Array(_)) => Err(format!(
            "`--{}` takes one value, not a list (only repeatable flags take lists)",
            flag.long
        )),
        (Kind::Many, toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                scalar(v).ok_or_else(|| {
                    format!(
                        "`--{}`'s list holds {}: each item is one value (a string or a number)",
                        flag.long,
                        type_name(v)
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Value::Values),
        (_, v) => scalar(v).map(|s| Value::Values(vec![s])).ok_or_else(|| {
            format!(
                "`--{}` takes a string or a number ({}), not {}",
                flag.long,
                value_name(flag.arg),
                type_name(v)
            )
        }),
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

fn value_name(arg: &Arg) -> String {
    arg.get_value_names().and_then(|n| n.first()).map_or_else(
        || arg.get_id().to_string().to_uppercase(),
        |n| n.to_string(),
    )
}

/// Checks `value` with `flag`'s own value parser (on its command `cmd`, alone): clap's
/// message when it refuses it. Whether other flags are required with it is left to the parse
/// of the whole command line.
fn check_value(cmd: &Command, flag: Flag<'_>, value: &str) -> Result<(), String> {
    use clap::error::ErrorKind;
    let probe = cmd.clone().color(ColorChoice::Never);
    match probe.try_get_matches_from([
        OsString::from(cmd.get_name()),
        OsString::from(format!("--{}={value}", flag.long)),
    ]) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation | ErrorKind::InvalidUtf8
            ) =>
        {
            Err(clap_message(&e))
        }
        _ => Ok(()),
    }
}

/// A clap error as one line, without its `error:` prefix and usage hints.
fn clap_message(e: &clap::Error) -> String {
    e.render()
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:")
        })
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An environment variable's value as a flag's setting.
fn env_value(
    cmd: &Command,
    flag: Flag<'_>,
    var: &str,
    raw: &OsString,
) -> Result<Value, ConfigError> {
    let text = raw.to_str().ok_or_else(|| ConfigError::BadEnv {
        var: var.to_string(),
        value: raw.to_string_lossy().into_owned(),
        reason: "not UTF-8 text".into(),
    })?;
    let bad = |reason: String| ConfigError::BadEnv {
        var: var.to_string(),
        value: text.to_string(),
        reason,
    };
    match flag.kind {
        Kind::Switch => match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Value::Switch(true)),
            "0" | "false" | "no" | "off" => Ok(Value::Switch(false)),
            _ => Err(bad(format!(
                "`--{}` is a switch: give 1, true, yes, on or 0, false, no, off",
                flag.long
            ))),
        },
        Kind::One | Kind::Many => {
            check_value(cmd, flag, text).map_err(bad)?;
            Ok(Value::Values(vec![text.to_string()]))
        }
    }
}

/// What the command line says before parsing: the subcommand path and where it ends, the
/// flags given, the configuration file named, whether help was asked for.
struct Scan {
    path: Vec<String>,
    /// Index in argv right after the subcommand path.
    insert_at: usize,
    /// Ids of the flags given (in any command's context along the path).
    given: BTreeSet<String>,
    config: Option<PathBuf>,
    help: bool,
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_action().takes_values() && arg.get_num_args().is_none_or(|r| r.min_values() > 0)
}

/// Whether clap reads `next` as `arg`'s value rather than as a flag: it does unless `next`
/// starts with `-` and the flag takes no such values (negative numbers when allowed).
fn value_for(arg: &Arg, next: &OsString) -> bool {
    let Some(v) = next.to_str() else {
        return true;
    };
    !v.starts_with('-')
        || v == "-"
        || arg.is_allow_hyphen_values_set()
        || (arg.is_allow_negative_numbers_set() && v.parse::<f64>().is_ok())
}

fn is_help(arg: &Arg) -> bool {
    matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    )
}

fn scan(root: &Command, argv: &[OsString]) -> Scan {
    let mut cur = root;
    let mut out = Scan {
        path: Vec::new(),
        insert_at: argv.len().min(1),
        given: BTreeSet::new(),
        config: None,
        help: false,
    };
    let mut i = 1;
    while i < argv.len() {
        let Some(tok) = argv[i].to_str() else {
            i += 1;
            continue;
        };
        if tok == "--" {
            break;
        }
        // The flag this token names and the value attached to it, if any.
        let mut found: Option<(&Arg, bool)> = None;
        if let Some(rest) = tok.strip_prefix("--") {
            let (name, inline) = match rest.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (rest, None),
            };
            if let Some(arg) = cur.get_arguments().find(|a| {
                a.get_long() == Some(name)
                    || a.get_all_aliases().is_some_and(|al| al.contains(&name))
            }) {
                if arg.get_id() == CONFIG_FLAG {
                    out.config = inline
                        .map(PathBuf::from)
                        .or_else(|| argv.get(i + 1).map(PathBuf::from));
                }
                found = Some((arg, inline.is_some()));
            }
        } else if let Some(shorts) = tok.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (j, c) in shorts.char_indices() {
                let Some(arg) = cur.get_arguments().find(|a| {
                    a.get_short() == Some(c)
                        || a.get_all_short_aliases().is_some_and(|al| al.contains(&c))
                }) else {
                    break;
                };
                let attached = j + c.len_utf8() < shorts.len();
                if takes_value(arg) {
                    if arg.get_id() == CONFIG_FLAG {
                        out.config = if attached {
                            Some(PathBuf::from(&shorts[j + c.len_utf8()..]))
                        } else {
                            argv.get(i + 1).map(PathBuf::from)
                        };
                    }
                    found = Some((arg, attached));
                    break;
                }
                out.given.insert(arg.get_id().to_string());
                out.help |= is_help(arg);
            }
        } else if cur.has_subcommands() {
            match cur.find_subcommand(tok) {
                Some(sub) => {
                    cur = sub;
                    out.path.push(sub.get_name().to_string());
                    out.insert_at = i + 1;
                }
                None => break,
            }
        }
        if let Some((arg, attached)) = found {
            out.given.insert(arg.get_id().to_string());
            out.help |= is_help(arg);
            if !attached && takes_value(arg) && argv.get(i + 1).is_some_and(|v| value_for(arg, v)) {
                i += 1;
            }
        }
        i += 1;
    }
    out
}

/// The command line with the environment's and the configuration file's settings inserted.
#[derive(Debug, Clone)]
pub struct Layered {
    /// The argument list to parse.
    pub args: Vec<OsString>,
    /// The subcommand path found (`["cloud", "serve"]`).
    pub command: Vec<String>,
    /// The settings taken from the environment and the file, in the order inserted
    /// (switches turned off included: they insert nothing).
    pub settings: Vec<Setting>,
    /// The long names of the command's flags given on the command line.
    pub given: Vec<String>,
    /// The configuration file read, if any.
    pub config: Option<PathBuf>,
}

impl Layered {
    /// A line saying where the flags a clap error names came from, when they came from the
    /// environment or the file (`note: --prompt-file came from config x.toml [generate]`);
    /// when the error names none of them (a flag they set requires another), every setting
    /// they inserted. `None` for help and version requests, or when nothing was inserted.
    pub fn explain(&self, err: &clap::Error) -> Option<String> {
        use clap::error::ErrorKind;
        if matches!(
            err.kind(),
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
        ) {
            return None;
        }
        let mut named = Vec::new();
        for (kind, value) in err.context() {
            if !matches!(
                kind,
                ContextKind::InvalidArg | ContextKind::PriorArg | ContextKind::InvalidValue
            ) {
                continue;
            }
            match value {
                ContextValue::String(s) => named.push(s.clone()),
                ContextValue::Strings(v) => named.extend(v.iter().cloned()),
                _ => {}
            }
        }
        let inserted: Vec<&Setting> = self
            .settings
            .iter()
            .filter(|s| s.value != Value::Switch(false))
            .collect();
        let names = |s: &Setting| {
            let flag = format!("--{}", s.flag);
            named.iter().any(|n| {
                n == &flag
                    || n.starts_with(&format!("{flag} "))
                    || n.starts_with(&format!("{flag}="))
            })
        };
        let notes: Vec<String> = inserted
            .iter()
            .filter(|s| names(s))
            .map(|s| format!("--{} came from {}", s.flag, s.source))
            .collect();
        if !notes.is_empty() {
            return Some(format!("note: {}", notes.join("; ")));
        }
        (!inserted.is_empty()).then(|| {
            format!(
                "note: added from the environment and the configuration file: {}",
                inserted
                    .iter()
                    .map(|s| format!("--{} ({})", s.flag, s.source))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

/// The configuration file `--config` names in `argv`, else `$ECSPEC_CONFIG` (empty: unset).
pub fn config_path(flag: Option<&Path>, env: Env<'_>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| env(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// Inserts the environment's and the configuration file's settings for the command `argv`
/// runs (when it is one of [`CONFIGURABLE`]) into `argv`, right after its subcommand path,
/// for every flag not given on the command line; other command lines come back as they are,
/// and so do those asking for `--help` or `--version`. `env` looks up environment variables.
///
/// # Errors
/// [`ConfigError`]: the file cannot be read or has an error; an environment variable's value
/// is refused by its flag.
pub fn layer(root: Command, argv: Vec<OsString>, env: Env<'_>) -> Result<Layered, ConfigError> {
    let root = built(root);
    let scan = scan(&root, &argv);
    let unchanged = |scan: Scan, argv: Vec<OsString>| Layered {
        args: argv,
        command: scan.path,
        settings: Vec::new(),
        given: Vec::new(),
        config: None,
    };
    let Some((_, leaf)) = configurable(&root)
        .into_iter()
        .find(|(p, _)| *p == scan.path)
    else {
        return Ok(unchanged(scan, argv));
    };
    if scan.help {
        return Ok(unchanged(scan, argv));
    }
    let config_path = config_path(scan.config.as_deref(), env);
    let file = config_path
        .as_deref()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            ConfigFile::parse_built(p, &text, &root)
        })
        .transpose()?;
    let section = scan.path.join(".");
    let flags = flags(leaf);
    let given: Vec<&Arg> = flags
        .iter()
        .filter(|f| scan.given.contains(f.arg.get_id().as_str()))
        .map(|f| f.arg)
        .collect();
    let mut taken = given.clone();
    let mut settings = Vec::new();
    // The environment, then the file: each layer skips the flags a higher one set, and those
    // conflicting with a flag a higher one set.
    for layer in 0..2 {
        let mut this_layer = Vec::new();
        for f in &flags {
            let decided = scan.given.contains(f.arg.get_id().as_str())
                || settings.iter().any(|s: &Setting| s.flag == f.long);
            if decided {
                continue;
            }
            let setting = if layer == 0 {
                let var = env_var_name(f.long);
                if RESERVED_ENV.contains(&var.as_str()) {
                    continue;
                }
                match env(&var).filter(|v| !v.is_empty()) {
                    Some(raw) => Setting {
                        flag: f.long.to_string(),
                        value: env_value(leaf, *f, &var, &raw)?,
                        source: Source::Env { var },
                    },
                    None => continue,
                }
            } else {
                match file.as_ref().and_then(|c| c.get(&section, f.long)) {
                    Some((value, key)) => Setting {
                        flag: f.long.to_string(),
                        value: value.clone(),
                        source: Source::Config {
                            file: file.as_ref().map(|c| c.path.clone()).unwrap_or_default(),
                            section: section.clone(),
                            key: key.clone(),
                        },
                    },
                    None => continue,
                }
            };
            if taken.iter().any(|t| conflict(leaf, t, f.arg)) {
                continue;
            }
            if setting.value != Value::Switch(false) {
                this_layer.push(f.arg);
            }
            settings.push(setting);
        }
        taken.extend(this_layer);
    }
    let mut inserted = Vec::new();
    for s in &settings {
        match &s.value {
            Value::Switch(true) => inserted.push(OsString::from(format!("--{}", s.flag))),
            Value::Switch(false) => {}
            Value::Values(vs) => inserted.extend(
                vs.iter()
                    .map(|v| OsString::from(format!("--{}={v}", s.flag))),
            ),
        }
    }
    let mut args = argv;
    let at = scan.insert_at;
    args.splice(at..at, inserted);
    Ok(Layered {
        args,
        command: scan.path,
        settings,
        given: given
            .iter()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect(),
        config: file.map(|c| c.path),
    })
}

/// Whether `a` and `b` cannot be given together.
fn conflict(cmd: &Command, a: &Arg, b: &Arg) -> bool {
    let names = |x: &Arg, y: &Arg| {
        cmd.get_arg_conflicts_with(x)
            .iter()
            .any(|c| c.get_id() == y.get_id())
    };
    a.get_id() != b.get_id() && (names(a, b) || names(b, a))
}

/// One flag of a command after merging: its setting and where it came from (`None`: not set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The flag's long name.
    pub flag: String,
    /// Its value and source, `None` when nothing sets it.
    pub setting: Option<(Value, Source)>,
}

/// The settings of the command `words` starts with (`["generate", "--max-tokens", "5"]`:
/// the command path, then flags given as on its command line) after merging the command
/// line, the environment, the configuration file (`config`, else `$ECSPEC_CONFIG`) and the
/// defaults: every configurable flag, in declaration order. Returns the command path and the
/// flags.
///
/// # Errors
/// [`ConfigError::NotConfigurable`] when the words name no configurable command; the file's,
/// the environment's and clap's errors.
pub fn effective(
    root: Command,
    words: &[String],
    config: Option<&Path>,
    env: Env<'_>,
) -> Result<(Vec<String>, Vec<Effective>), ConfigError> {
    let root = built(root);
    let commands = configurable(&root);
    let path_len = commands
        .iter()
        .filter(|(p, _)| words.starts_with(p))
        .map(|(p, _)| p.len())
        .max();
    let Some(path_len) = path_len else {
        let named: Vec<&str> = words
            .iter()
            .take_while(|w| !w.starts_with('-'))
            .map(String::as_str)
            .collect();
        return Err(ConfigError::NotConfigurable {
            command: if named.is_empty() {
                "(no command)".into()
            } else {
                named.join(" ")
            },
            known: commands.iter().map(|(p, _)| p.join(" ")).collect(),
        });
    };
    let mut argv = vec![OsString::from("ecspec")];
    if let Some(c) = config {
        argv.push(OsString::from(format!("--{CONFIG_FLAG}={}", c.display())));
    }
    argv.extend(words.iter().map(OsString::from));
    let layered = layer(root.clone(), argv, env)?;
    let matches = root
        .clone()
        .try_get_matches_from(&layered.args)
        .map_err(|e| {
            let mut message = clap_message(&e);
            if let Some(note) = layered.explain(&e) {
                message += &format!(" ({note})");
            }
            ConfigError::CommandLine { message }
        })?;
    let path = words[..path_len].to_vec();
    let mut m: &ArgMatches = &matches;
    let mut leaf = &root;
    for name in &path {
        m = m
            .subcommand_matches(name)
            .ok_or_else(|| ConfigError::CommandLine {
                message: format!("no `{name}` on the merged command line"),
            })?;
        leaf = leaf
            .find_subcommand(name)
            .ok_or_else(|| ConfigError::CommandLine {
                message: format!("no `{name}` command"),
            })?;
    }
    let out = flags(leaf)
        .into_iter()
        .map(|f| {
            let id = f.arg.get_id().as_str();
            let raw = || -> Vec<String> {
                m.get_raw(id)
                    .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                    .unwrap_or_default()
            };
            let value = || match f.kind {
                // SetTrue reads "true"; Count, a count.
                Kind::Switch => Value::Switch(raw().iter().any(|v| v != "false" && v != "0")),
                _ => Value::Values(raw()),
            };
            let setting = if layered.given.iter().any(|g| g == f.long) {
                Some((value(), Source::CommandLine))
            } else if let Some(s) = layered.settings.iter().find(|s| s.flag == f.long) {
                Some((s.value.clone(), s.source.clone()))
            } else if m.value_source(id) == Some(clap::parser::ValueSource::DefaultValue) {
                Some((value(), Source::Default))
            } else {
                None
            };
            Effective {
                flag: f.long.to_string(),
                setting,
            }
        })
        .collect();
    Ok((path, out))
}

/// [`effective`] as `ecspec config print` shows it: a header naming the command and the file,
/// then one line per flag, `key = value  # source`, in TOML (a file's section could be copied
/// from it); unset flags commented out.
pub fn format_effective(command: &[String], config: Option<&Path>, flags: &[Effective]) -> String {
    let mut out = format!("[{}]", command.join("."));
    out += &match config {
        Some(c) => format!(
            "  # ecspec {} · config {}\n",
            command.join(" "),
            c.display()
        ),
        None => format!("  # ecspec {} · no configuration file\n", command.join(" ")),
    };
    let lines: Vec<(String, String)> = flags
        .iter()
        .map(|e| match &e.setting {
            Some((v, src)) => (format!("{} = {}", e.flag, toml_text(v)), src.to_string()),
            None => (format!("# {}", e.flag), "not set".into()),
        })
        .collect();
    let width = lines
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    for (l, src) in lines {
        out += &format!("{l:<width$}  # {src}\n");
    }
    out
}

/// A setting as a TOML value: numbers bare, other text quoted.
fn toml_text(v: &Value) -> String {
    fn scalar(s: &str) -> String {
        let plain_int = s.parse::<i64>().is_ok_and(|i| i.to_string() == s);
        let plain_float = s.parse::<f64>().is_ok_and(f64::is_finite)
            && s.split_once('.').is_some_and(|(a, b)| {
                !b.is_empty()
                    && b.chars().all(|c| c.is_ascii_digit())
                    && a.trim_start_matches('-')
                        .parse::<i64>()
                        .is_ok_and(|i| i.to_string() == a.trim_start_matches('-'))
            });
        if plain_int || plain_float {
            s.to_string()
        } else {
            toml::Value::String(s.to_string()).to_string()
        }
    }
    match v {
        Value::Switch(b) => b.to_string(),
        Value::Values(vs) if vs.len() == 1 => scalar(&vs[0]),
        Value::Values(vs) => format!(
            "[{}]",
            vs.iter().map(|s| scalar(s)).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The configurable command paths this command tree has (`generate`, `cloud serve`).
pub fn configurable_commands(root: Command) -> Vec<Vec<String>> {
    let root = built(root);
    configurable(&root).into_iter().map(|(p, _)| p).collect()
}

/// Flags of the configurable commands whose environment variable is one of [`RESERVED_ENV`]
/// (never read from the environment): `(command path, long name, variable)`.
pub fn env_collisions(root: Command) -> Vec<(String, String, String)> {
    let root = built(root);
    configurable(&root)
        .into_iter()
        .flat_map(|(p, cmd)| {
            flags(cmd)
                .into_iter()
                .map(|f| (p.join(" "), f.long.to_string(), env_var_name(f.long)))
                .filter(|(_, _, var)| RESERVED_ENV.contains(&var.as_str()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Levenshtein distance (for suggestions).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Up to three of `candidates` close to `word` (`_` read as `-`), closest first.
fn close_matches<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let w = word.replace('_', "-").to_ascii_lowercase();
    let mut scored: Vec<(usize, &str)> = candidates
        .filter_map(|c| {
            let d = distance(&w, c);
            let near = d <= (w.chars().count() / 3).max(2);
            let part = w.len() >= 4 && (c.contains(w.as_str()) || w.contains(c));
            (near || part).then_some((d, c))
        })
        .collect();
    scored.sort();
    scored.dedup();
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let w = word.replace(['-', '_', ' '], ".");
    close_matches(&w, candidates).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Parser, Subcommand};
    use std::collections::HashMap;

    /// A command tree shaped like `ecspec`'s.
    #[derive(Debug, Parser)]
    #[command(name = "ecspec")]
    struct Cli {
        #[arg(long, global = true, default_value = "warn")]
        log: String,
        #[arg(long, global = true)]
        threads: Option<usize>,
        #[arg(long, global = true, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Debug, Subcommand)]
    enum Cmd {
        Generate(Gen),
        Cloud {
            #[command(subcommand)]
            command: CloudCmd,
        },
        Models,
    }

    #[derive(Debug, Subcommand)]
    enum CloudCmd {
        Serve(Serve),
        SetVersion { version: Option<String> },
    }

    #[derive(Debug, Args)]
    struct Gen {
        #[arg(long, conflicts_with = "prompt_file")]
        prompt: Option<String>,
        #[arg(long)]
        prompt_file: Option<PathBuf>,
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
        max_tokens: u32,
        #[arg(long)]
        cloud: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(short = 'q', long)]
        quiet: bool,
        #[arg(long, allow_hyphen_values = true, value_name = "AT:FOR")]
        outage: Vec<String>,
        #[arg(long, allow_negative_numbers = true)]
        rtt_ms: Option<f64>,
        #[arg(long, value_enum, default_value = "speculative")]
        mode: Mode,
    }

    #[derive(Debug, Clone, Copy, clap::ValueEnum)]
    enum Mode {
        Speculative,
        CloudOnly,
    }

    #[derive(Debug, Args)]
    struct Serve {
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn config(text: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ecspec-config-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ecspec.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn layered(args: &[&str], vars: &[(&str, &str)]) -> Result<Layered, ConfigError> {
        use clap::CommandFactory;
        let env = env_of(vars);
        layer(
            Cli::command(),
            args.iter().map(OsString::from).collect(),
            &env,
        )
    }

    fn args(l: &Layered) -> Vec<String> {
        l.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn parse(l: &Layered) -> Gen {
        match Cli::try_parse_from(&l.args).unwrap().command {
            Cmd::Generate(g) => g,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file_which_beats_defaults() {
        let file = config("[generate]\nmax-tokens = 7\ncloud = \"file:1\"\njson = true\n");
        let f = file.to_str().unwrap();
        // File only.
        let l = layered(&["ecspec", "--config", f, "generate"], &[]).unwrap();
        let g = parse(&l);
        assert_eq!(
            (g.max_tokens, g.cloud.as_deref(), g.json),
            (7, Some("file:1"), true)
        );
        // The environment over the file.
        let l = layered(
            &["ecspec", "generate", "--config", f],
            &[("ECSPEC_MAX_TOKENS", "32"), ("ECSPEC_JSON", "0")],
        )
        .unwrap();
        let g = parse(&l);
        assert_eq!((g.max_tokens, g.json), (32, false));
        assert!(l.settings.iter().any(|s| s.flag == "max-tokens"
            && s.source
                == Source::Env {
                    var: "ECSPEC_MAX_TOKENS".into()
                }));
        // Flags over both, in every form.
        for flag in [&["--max-tokens", "5"][..], &["--max-tokens=5"]] {
            let mut argv = vec!["ecspec", "generate"];
            argv.extend(flag);
            let l = layered(&argv, &[("ECSPEC_CONFIG", f), ("ECSPEC_MAX_TOKENS", "32")]).unwrap();
            assert_eq!(parse(&l).max_tokens, 5, "{:?}", args(&l));
            assert_eq!(parse(&l).cloud.as_deref(), Some("file:1"));
        }
        // Defaults when nothing sets it.
        let l = layered(&["ecspec", "generate"], &[]).unwrap();
        assert_eq!(parse(&l).max_tokens, 128);
        assert_eq!(l.args.len(), 2);
    }

    #[test]
    fn settings_go_right_after_the_command_path_and_values_are_not_read_as_flags() {
        let file = config("[cloud.serve]\nlisten = \"0.0.0.0:1\"\n[generate]\nmax_tokens = 9\n");
        let f = file.to_str().unwrap();
        let l = layered(
            &["ecspec", "--threads", "2", "cloud", "serve"],
            &[("ECSPEC_CONFIG", f), ("ECSPEC_MAX_TOKENS", "3")],
        )
        .unwrap();
        assert_eq!(
            args(&l),
            [
                "ecspec",
                "--threads",
                "2",
                "cloud",
                "serve",
                "--listen=0.0.0.0:1"
            ]
        );
        // Values are read as clap reads them: a negative number is --rtt-ms's value, a
        // hyphenated one --outage's, a word --prompt's.
        let l = layered(
            &[
                "ecspec", "generate", "--prompt", "json", "--rtt-ms", "-5", "--outage", "-1:2",
            ],
            &[
                ("ECSPEC_JSON", "1"),
                ("ECSPEC_RTT_MS", "7"),
                ("ECSPEC_OUTAGE", "3:1"),
            ],
        )
        .unwrap();
        assert_eq!(
            args(&l),
            [
                "ecspec", "generate", "--json", "--prompt", "json", "--rtt-ms", "-5", "--outage",
                "-1:2"
            ]
        );
        // `--prompt --json` is --prompt without a value and --json: clap refuses it, and
        // the environment's --json is not added to it.
        let l = layered(
            &["ecspec", "generate", "--prompt", "--json"],
            &[("ECSPEC_JSON", "1")],
        )
        .unwrap();
        assert_eq!(args(&l), ["ecspec", "generate", "--prompt", "--json"]);
        // Short flags, clustered or not, count as given.
        let l = layered(&["ecspec", "generate", "-q"], &[("ECSPEC_QUIET", "0")]).unwrap();
        assert!(l.settings.is_empty(), "{:?}", l.settings);
        // Global flags given before the command path count as given.
        let l = layered(
            &["ecspec", "--threads=3", "generate"],
            &[("ECSPEC_THREADS", "4")],
        )
        .unwrap();
        assert_eq!(args(&l), ["ecspec", "--threads=3", "generate"]);
        let l = layered(&["ecspec", "generate"], &[("ECSPEC_THREADS", "4")]).unwrap();
        assert_eq!(args(&l), ["ecspec", "generate", "--threads=4"]);
    }

    #[test]
    fn arrays_repeat_a_flag_and_switches_are_true_or_false() {
        let file =
            config("[generate]\noutage = [\"-1:2\", \"5:0.5\"]\njson = false\nquiet = true\n");
        let l = layered(
            &["ecspec", "generate", "--config", file.to_str().unwrap()],
            &[],
        )
        .unwrap();
        let g = parse(&l);
        assert_eq!(g.outage, ["-1:2", "5:0.5"]);
        assert!(!g.json && g.quiet);
        assert_eq!(
            args(&l)[2..],
            [
                "--quiet",
                "--outage=-1:2",
                "--outage=5:0.5",
                "--config",
                file.to_str().unwrap()
            ]
        );
        // A repeatable flag on the command line replaces the file's list, not adds to it.
        let l = layered(
            &[
                "ecspec",
                "generate",
                "--config",
                file.to_str().unwrap(),
                "--outage",
                "1:1",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(parse(&l).outage, ["1:1"]);
        // A switch from the environment.
        for (v, on) in [("1", true), ("yes", true), ("off", false), ("FALSE", false)] {
            let l = layered(&["ecspec", "generate"], &[("ECSPEC_JSON", v)]).unwrap();
            assert_eq!(parse(&l).json, on, "{v}");
        }
        let e = layered(&["ecspec", "generate"], &[("ECSPEC_JSON", "maybe")]).unwrap_err();
        assert!(e.to_string().contains("ECSPEC_JSON=\"maybe\""), "{e}");
    }

    #[test]
    fn bad_sections_and_keys_name_the_file_section_key_and_close_matches() {
        let err = |text: &str| {
            let file = config(text);
            let e = layered(
                &["ecspec", "generate", "--config", file.to_str().unwrap()],
                &[],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(file.to_str().unwrap()), "{e}");
            e
        };
        let e = err("[generate]\nmax-tokns = 3\n");
        assert!(
            e.contains("[generate] `max-tokns` is not a flag of `generate`"),
            "{e}"
        );
        assert!(e.contains("did you mean `max-tokens`?"), "{e}");
        let e = err("[generate]\nlisten = \"x:1\"\n");
        assert!(e.contains("(it is a flag of `cloud serve`)"), "{e}");
        let e = err("[cloud-serve]\nlisten = \"x:1\"\n");
        assert!(e.contains("[cloud-serve] is not a command"), "{e}");
        assert!(e.contains("did you mean [cloud.serve]?"), "{e}");
        assert!(
            e.contains("the sections are [generate], [cloud.serve]"),
            "{e}"
        );
        let e = err("[cloud]\nlisten = \"x:1\"\n");
        assert!(e.contains("[cloud] is not a command"), "{e}");
        let e = err("max-tokens = 3\n");
        assert!(e.contains("`max-tokens` is outside any section"), "{e}");
        let e = err("[models]\n");
        assert!(e.contains("[models] is not a command"), "{e}");
        let e = err("[generate]\nconfig = \"other.toml\"\n");
        assert!(e.contains("cannot name another one"), "{e}");
        let e = err("[generate]\nmax-tokens = 3\nmax_tokens = 4\n");
        assert!(e.contains("already set by `max-tokens`"), "{e}");
        let e = err("[generate\n");
        assert!(e.contains("the configuration file"), "{e}");
        // Errors are found in any section, not only the running command's.
        let e = err("[cloud.serve]\nlistn = \"x:1\"\n");
        assert!(e.contains("[cloud.serve] `listn`"), "{e}");
        assert!(e.contains("`listen`"), "{e}");
    }

    #[test]
    fn wrong_types_and_refused_values_are_errors_naming_the_key() {
        let err = |text: &str| {
            let file = config(text);
            layered(
                &["ecspec", "generate", "--config", file.to_str().unwrap()],
                &[],
            )
            .unwrap_err()
            .to_string()
        };
        let e = err("[generate]\njson = \"yes\"\n");
        assert!(
            e.contains(
                "[generate] `json`: `--json` is a switch: write true or false, not a string"
            ),
            "{e}"
        );
        let e = err("[generate]\nmax-tokens = true\n");
        assert!(
            e.contains("`--max-tokens` takes a value (MAX_TOKENS)"),
            "{e}"
        );
        let e = err("[generate]\ncloud = [\"a:1\", \"b:2\"]\n");
        assert!(e.contains("takes one value, not a list"), "{e}");
        let e = err("[generate]\ncloud = { host = \"a\" }\n");
        assert!(e.contains("not a table"), "{e}");
        let e = err("[generate]\noutage = [[\"1:1\"]]\n");
        assert!(e.contains("holds a list"), "{e}");
        // The flag's own parser: a range, a number, a value enum.
        let e = err("[generate]\nmax-tokens = 0\n");
        assert!(
            e.contains("[generate] `max-tokens`: invalid value '0' for '--max-tokens"),
            "{e}"
        );
        let e = err("[generate]\nmax-tokens = 1.5\n");
        assert!(e.contains("invalid value '1.5'"), "{e}");
        let e = err("[generate]\nmode = \"fast\"\n");
        assert!(
            e.contains("possible values: speculative, cloud-only"),
            "{e}"
        );
        // The environment's values too, naming the variable.
        let e = layered(&["ecspec", "generate"], &[("ECSPEC_MAX_TOKENS", "lots")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("ECSPEC_MAX_TOKENS=\"lots\": invalid value 'lots'"),
            "{e}"
        );
    }

    #[test]
    fn only_the_running_command_reads_the_environment_and_reserved_names_are_never_flags() {
        // ECSPEC_LISTEN is `cloud serve`'s; ECSPEC_DATA_DIR is the shared data directory even
        // though `cloud serve` here has a --data-dir.
        let vars = [("ECSPEC_LISTEN", "1.2.3.4:5"), ("ECSPEC_DATA_DIR", "/data")];
        let l = layered(&["ecspec", "generate"], &vars).unwrap();
        assert_eq!(args(&l), ["ecspec", "generate"]);
        let l = layered(&["ecspec", "cloud", "serve"], &vars).unwrap();
        assert_eq!(args(&l), ["ecspec", "cloud", "serve", "--listen=1.2.3.4:5"]);
        // Commands that are not configurable are left alone, and so is a request for help.
        let l = layered(&["ecspec", "models"], &[("ECSPEC_CONFIG", "/nonexistent")]).unwrap();
        assert_eq!(args(&l), ["ecspec", "models"]);
        let l = layered(
            &["ecspec", "generate", "--help"],
            &[("ECSPEC_MAX_TOKENS", "x")],
        )
        .unwrap();
        assert_eq!(args(&l), ["ecspec", "generate", "--help"]);
        // A missing file is an error when a configurable command runs.
        let e = layered(
            &["ecspec", "generate"],
            &[("ECSPEC_CONFIG", "/nonexistent.toml")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent.toml"), "{e}");
        use clap::CommandFactory;
        assert_eq!(
            env_collisions(Cli::command()),
            [(
                "cloud serve".to_string(),
                "data-dir".to_string(),
                "ECSPEC_DATA_DIR".to_string()
            )]
        );
    }

    #[test]
    fn a_lower_layer_setting_that_conflicts_with_a_higher_flag_is_left_out() {
        let file = config("[generate]\nprompt-file = \"p.txt\"\n");
        let f = file.to_str().unwrap();
        let l = layered(
            &["ecspec", "generate", "--prompt", "hi"],
            &[("ECSPEC_CONFIG", f)],
        )
        .unwrap();
        let g = parse(&l);
        assert_eq!((g.prompt.as_deref(), g.prompt_file), (Some("hi"), None));
        let l = layered(
            &["ecspec", "generate"],
            &[("ECSPEC_CONFIG", f), ("ECSPEC_PROMPT", "env")],
        )
        .unwrap();
        assert_eq!(parse(&l).prompt_file, None);
        // Without the higher flag, the file's setting stands.
        let l = layered(&["ecspec", "generate"], &[("ECSPEC_CONFIG", f)]).unwrap();
        assert_eq!(parse(&l).prompt_file, Some(PathBuf::from("p.txt")));
    }

    #[test]
    fn a_clap_error_about_a_layered_flag_says_where_it_came_from() {
        use clap::CommandFactory;
        let file = config("[generate]\nprompt = \"a\"\n");
        let l = layered(
            &["ecspec", "generate", "--config", file.to_str().unwrap()],
            &[("ECSPEC_PROMPT_FILE", "p.txt")],
        )
        .unwrap();
        // The environment's prompt-file and the file's prompt conflict (the file's prompt
        // is left out: the environment is the higher layer).
        assert!(
            l.settings.iter().all(|s| s.flag != "prompt"),
            "{:?}",
            l.settings
        );
        let bad = Cli::command()
            .try_get_matches_from(["ecspec", "generate", "--prompt=x", "--prompt-file=y"])
            .unwrap_err();
        let l2 = Layered {
            settings: vec![Setting {
                flag: "prompt-file".into(),
                value: Value::Values(vec!["y".into()]),
                source: Source::Env {
                    var: "ECSPEC_PROMPT_FILE".into(),
                },
            }],
            ..l
        };
        let note = l2.explain(&bad).unwrap();
        assert_eq!(note, "note: --prompt-file came from env ECSPEC_PROMPT_FILE");
    }

    #[test]
    fn effective_settings_name_their_sources() {
        use clap::CommandFactory;
        let file =
            config("[generate]\nmax-tokens = 7\ncloud = \"file:1\"\noutage = [\"1:1\", \"2:1\"]\n");
        let env = env_of(&[("ECSPEC_CLOUD", "env:2")]);
        let words: Vec<String> = ["generate", "--json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (path, flags) = effective(Cli::command(), &words, Some(&file), &env).unwrap();
        assert_eq!(path, ["generate"]);
        let get = |name: &str| {
            flags
                .iter()
                .find(|f| f.flag == name)
                .unwrap()
                .setting
                .clone()
        };
        assert_eq!(
            get("max-tokens"),
            Some((
                Value::Values(vec!["7".into()]),
                Source::Config {
                    file: file.clone(),
                    section: "generate".into(),
                    key: "max-tokens".into()
                }
            ))
        );
        assert_eq!(
            get("cloud"),
            Some((
                Value::Values(vec!["env:2".into()]),
                Source::Env {
                    var: "ECSPEC_CLOUD".into()
                }
            ))
        );
        assert_eq!(
            get("json"),
            Some((Value::Switch(true), Source::CommandLine))
        );
        assert_eq!(get("quiet"), Some((Value::Switch(false), Source::Default)));
        assert_eq!(
            get("mode"),
            Some((Value::Values(vec!["speculative".into()]), Source::Default))
        );
        assert_eq!(get("prompt"), None);
        let text = format_effective(&path, Some(&file), &flags);
        assert!(text.contains("max-tokens = 7"), "{text}");
        assert!(text.contains("cloud = \"env:2\""), "{text}");
        assert!(text.contains("outage = [\"1:1\", \"2:1\"]"), "{text}");
        assert!(text.contains("# env ECSPEC_CLOUD"), "{text}");
        assert!(text.contains("# prompt"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("mode = \"speculative\"") && l.ends_with("# default")),
            "{text}"
        );
        // What the file prints parses back as the command's section.
        let section: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{}\n", l.split("  #").next().unwrap()))
            .collect();
        ConfigFile::parse(Path::new("printed.toml"), &section, Cli::command()).unwrap();
        let e = effective(Cli::command(), &["models".into()], None, &env).unwrap_err();
        assert!(e.to_string().contains("`models` takes no settings"), "{e}");
    }

    #[test]
    fn close_matches_rank_by_distance() {
        let c = ["max-tokens", "mode", "model", "cloud"];
        assert_eq!(
            close_matches("max_tokns", c.iter().copied()),
            ["max-tokens"]
        );
        assert_eq!(close_matches("mdoe", c.iter().copied()), ["mode"]);
        assert_eq!(close_matches("modl", c.iter().copied()), ["mode", "model"]);
        assert!(close_matches("zzzzzz", c.iter().copied()).is_empty());
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
