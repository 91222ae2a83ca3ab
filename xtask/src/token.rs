//! `cargo xtask token`: a new random API token and the tokens-file entry for it.
//!
//! The token is 32 random bytes from /dev/urandom, written as 64 lower-case hex characters. The
//! services never store tokens, only their SHA-256 (hex, of the token string as sent), which
//! comes from coreutils' `sha256sum`.

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

pub const LEVELS: [&str; 3] = ["province", "district", "commune"];
pub const ROLES: [&str; 3] = ["counter", "importer", "auditor"];

#[derive(Debug, PartialEq, Eq)]
pub struct TokenArgs {
    pub agency: String,
    pub level: String,
    pub role: String,
    pub name: Option<String>,
}

/// `cargo xtask token --help`.
pub const USAGE: &str = "\
Usage: cargo xtask token --agency CODE --level province|district|commune
                         --role counter|importer|auditor [--name TEXT]

Prints a new random API token (once; it is stored nowhere) and the `[[token]]` entry with its
SHA-256 for the tokens file (`auth.tokens_file`). `--agency '*'` makes a token for every agency
(importer and auditor only). `--name` defaults to ROLE-AGENCY. Flags also as `--flag=value`.
";

/// What `cargo xtask token ARGS` asks.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenCommand {
    /// `-h` or `--help` anywhere a flag may stand.
    Help,
    New(TokenArgs),
}

/// Parses `--agency CODE --level L --role R [--name TEXT]` (also `--flag=value`), or `--help`.
pub fn parse(args: &[String]) -> Result<TokenCommand> {
    if args.iter().any(|a| a == "-h" || a == "--help") && help_in_flag_position(args) {
        return Ok(TokenCommand::Help);
    }
    parse_new(args).map(TokenCommand::New)
}

/// Whether a `-h`/`--help` stands where a flag stands, not as the value of the flag before it
/// (`--name --help` names a token "--help").
fn help_in_flag_position(args: &[String]) -> bool {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return true,
            flag if flag.starts_with("--") && !flag.contains('=') => {
                args.next();
            }
            _ => {}
        }
    }
    false
}

fn parse_new(args: &[String]) -> Result<TokenArgs> {
    let (mut agency, mut level, mut role, mut name) = (None, None, None, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let slot = match flag {
            "--agency" => &mut agency,
            "--level" => &mut level,
            "--role" => &mut role,
            "--name" => &mut name,
            _ => bail!("unknown argument {arg:?}"),
        };
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .with_context(|| format!("{flag} needs a value"))?
                .clone(),
        };
        if slot.replace(value).is_some() {
            bail!("{flag} given twice");
        }
    }
    let agency = agency.context("--agency is required")?;
    let level = level.context("--level is required")?;
    let role = role.context("--role is required")?;
    let code_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-');
    if agency != "*" && (agency.is_empty() || agency.len() > 40 || !agency.chars().all(code_char)) {
        bail!(
            "--agency must be an agency code (letters, digits, '.', '-'; e.g. 000.00.01.H40) \
             or * for all agencies, got {agency:?}"
        );
    }
    if !LEVELS.contains(&level.as_str()) {
        bail!("--level must be one of {}, got {level:?}", LEVELS.join("|"));
    }
    if !ROLES.contains(&role.as_str()) {
        bail!("--role must be one of {}, got {role:?}", ROLES.join("|"));
    }
    if agency == "*" && role == "counter" {
        bail!("a counter token must name one agency, not *");
    }
    if name
        .as_deref()
        .is_some_and(|n| n.is_empty() || n.chars().any(char::is_control))
    {
        bail!("--name must be a non-empty line of text");
    }
    Ok(TokenArgs {
        agency,
        level,
        role,
        name,
    })
}

pub fn token(args: &TokenArgs) -> Result<()> {
    let token = random_token()?;
    let hash = sha256_hex(&token)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", args.role, args.agency));

    println!("New token (shown only this once; it is stored nowhere, only its SHA-256 is):");
    println!();
    println!("    {token}");
    println!();
    println!("Give it to the client as its bearer token, and add this entry to the tokens file");
    println!("(the file `auth.tokens_file` points to); the services read it at start:");
    println!();
    print!("{}", entry(&name, args, &hash));
    Ok(())
}

/// The `[[token]]` entry, TOML.
fn entry(name: &str, args: &TokenArgs, sha256: &str) -> String {
    format!(
        "[[token]]\nname = {}\nagency = {}\nlevel = {}\nrole = {}\nsha256 = {}\n",
        toml_string(name),
        toml_string(&args.agency),
        toml_string(&args.level),
        toml_string(&args.role),
        toml_string(sha256),
    )
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// SHA-256 of `text`'s bytes, lower-case hex, by `sha256sum` (coreutils).
fn sha256_hex(text: &str) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("could not run sha256sum (coreutils)")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .context("writing to sha256sum")?;
    let out = child.wait_with_output().context("waiting for sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hex = stdout.split_whitespace().next().unwrap_or_default();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("unexpected sha256sum output: {stdout:?}");
    }
    Ok(hex.to_ascii_lowercase())
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_flags() {
        let parsed = parse(&strings(&[
            "--agency",
            "000.00.01.H40",
            "--level=province",
            "--role",
            "counter",
            "--name",
            "Quầy 1",
        ]))
        .unwrap();
        assert_eq!(
            parsed,
            TokenCommand::New(TokenArgs {
                agency: "000.00.01.H40".into(),
                level: "province".into(),
                role: "counter".into(),
                name: Some("Quầy 1".into()),
            })
        );
    }

    #[test]
    fn help_is_a_command_not_an_error() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["--agency", "X", "--help"],
            &["--role", "auditor", "-h", "--bogus"],
        ] {
            assert_eq!(
                parse(&strings(args)).unwrap(),
                TokenCommand::Help,
                "{args:?}"
            );
        }
        // The value of --name, not a request for help.
        let named = parse(&strings(&[
            "--agency", "*", "--level", "province", "--role", "auditor", "--name", "--help",
        ]))
        .unwrap();
        assert!(
            matches!(&named, TokenCommand::New(a) if a.name.as_deref() == Some("--help")),
            "{named:?}"
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(
            parse(&strings(&[
                "--agency", "X", "--level", "city", "--role", "counter"
            ]))
            .is_err()
        );
        assert!(
            parse(&strings(&[
                "--agency", "X", "--level", "district", "--role", "admin"
            ]))
            .is_err()
        );
        assert!(parse(&strings(&["--level", "district", "--role", "counter"])).is_err());
        assert!(parse(&strings(&["--agency", "X", "--agency", "Y"])).is_err());
        assert!(parse(&strings(&["--bogus"])).is_err());
        assert!(
            parse(&strings(&[
                "--agency", "*", "--level", "province", "--role", "counter"
            ]))
            .is_err()
        );
        assert!(
            parse(&strings(&[
                "--agency", "a b", "--level", "province", "--role", "auditor"
            ]))
            .is_err()
        );
        assert!(
            parse(&strings(&[
                "--agency", "*", "--level", "province", "--role", "auditor"
            ]))
            .is_ok()
        );
    }

    #[test]
    fn hashes_like_the_dev_tokens_file() {
        assert_eq!(
            sha256_hex("dev-counter-province").unwrap(),
            "4e0e31448d26a134570d88200a461602d8c682bb2f47e05856caaa2ac31ed06a"
        );
        assert_eq!(
            sha256_hex("").unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn tokens_are_64_hex_and_differ() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn escapes_toml() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("tab\t"), r#""tab\u0009""#);
    }
}
