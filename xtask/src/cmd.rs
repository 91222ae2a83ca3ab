//! Small helpers around `std::process`: where things are, running commands and showing them,
//! finding programs, and running as root.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// The repository root (xtask/ sits directly in it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the root) or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => repo_root().join(dir),
        _ => repo_root().join("target"),
    }
}

/// The cargo that runs us (`$CARGO`), so nested commands use the same toolchain.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo_root());
    cmd
}

/// Prints a step header.
pub fn step(title: &str) {
    println!("\n==> {title}");
}

/// The command as one would type it in a shell, with passwords in URLs hidden.
pub fn display(cmd: &Command) -> String {
    let mut shown = quote(cmd.get_program());
    for arg in cmd.get_args() {
        shown.push(' ');
        shown.push_str(&quote(arg));
    }
    shown
}

fn quote(arg: &OsStr) -> String {
    let arg = redact_url(&arg.to_string_lossy());
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@+%*".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// `scheme://user:secret@host/...` becomes `scheme://user:***@host/...`.
pub fn redact_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let start = scheme_end + 3;
    let authority_end = text[start..].find('/').map_or(text.len(), |i| start + i);
    let authority = &text[start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return text.to_owned();
    };
    match authority[..at].find(':') {
        Some(colon) => format!("{}***{}", &text[..start + colon + 1], &text[start + at..]),
        None => text.to_owned(),
    }
}

/// Prints the command, runs it with the terminal's stdout/stderr, fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    println!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs the command without echoing it, capturing stdout and stderr (stdin is empty).
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", display(cmd)))
}

/// Looks a program up in `$PATH`, then in the sbin directories (Debian puts daemons such as
/// nats-server in /usr/sbin, which is not in a normal user's `$PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// How this process can act as root, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Root,
    Sudo,
    None,
}

pub fn privilege() -> Privilege {
    static PRIVILEGE: OnceLock<Privilege> = OnceLock::new();
    *PRIVILEGE.get_or_init(|| {
        let uid = output(Command::new("id").arg("-u")).map(|out| out.stdout);
        if uid.is_ok_and(|uid| uid.trim_ascii() == b"0") {
            Privilege::Root
        } else if find_program("sudo").is_some()
            && output(Command::new("sudo").args(["-n", "true"])).is_ok_and(|o| o.status.success())
        {
            Privilege::Sudo
        } else {
            Privilege::None
        }
    })
}

/// `program` run as root: directly when we are root, through `sudo -n` when that works.
pub fn as_root(program: &str, why: &str) -> Result<Command> {
    match privilege() {
        Privilege::Root => Ok(Command::new(program)),
        Privilege::Sudo => {
            let mut cmd = Command::new("sudo");
            cmd.args(["-n", program]);
            Ok(cmd)
        }
        Privilege::None => bail!(
            "{why} needs root, and this user is not root and has no password-less sudo; \
             run `{program}` yourself as root"
        ),
    }
}

/// `program` run as the `postgres` system user (local socket, peer authentication).
pub fn as_postgres_user(program: &str, args: &[&str], why: &str) -> Result<Command> {
    let mut cmd = match privilege() {
        Privilege::Root => {
            // su runs its argument through the postgres user's shell: quote every word.
            let line: Vec<String> = std::iter::once(program)
                .chain(args.iter().copied())
                .map(|word| quote(OsStr::new(word)))
                .collect();
            let mut cmd = Command::new("su");
            cmd.args(["postgres", "-c", &line.join(" ")]);
            cmd
        }
        Privilege::Sudo => {
            let mut cmd = Command::new("sudo");
            cmd.args(["-n", "-u", "postgres", program]).args(args);
            cmd
        }
        Privilege::None => bail!(
            "{why} needs to run `{program}` as the postgres user, which needs root or \
             password-less sudo"
        ),
    };
    // The postgres user may not be allowed into the current directory.
    cmd.current_dir("/");
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("postgres://postgres:secret@127.0.0.1:5432/postgres"),
            "postgres://postgres:***@127.0.0.1:5432/postgres"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_url("postgres://me@host/db"), "postgres://me@host/db");
        assert_eq!(redact_url("plain@text"), "plain@text");
    }

    #[test]
    fn quotes_like_a_shell() {
        assert_eq!(quote(OsStr::new("--check")), "--check");
        assert_eq!(quote(OsStr::new("a b")), "'a b'");
        assert_eq!(
            quote(OsStr::new("ALTER USER x PASSWORD 'p'")),
            r"'ALTER USER x PASSWORD '\''p'\'''"
        );
    }
}
