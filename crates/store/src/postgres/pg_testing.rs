//! Test utility: a throwaway PostgreSQL server of one's own (initdb + pg_ctl), for tests that
//! stop and restart the database. Needs the PostgreSQL server binaries (`/usr/local/bin`,
//! `$REELSMITH_PG_BINDIR`, or `pg_config --bindir`); as root it runs them as `postgres` (or
//! `nobody`) through `runuser`, since PostgreSQL refuses to run as root.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivatePostgres {
    base: PathBuf,
    data: PathBuf,
    port: u16,
    bindir: PathBuf,
    /// Who runs the server when we are root.
    run_as: Option<String>,
}

/// A port nobody listens on right now.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn bindir() -> io::Result<PathBuf> {
    if let Some(d) = std::env::var_os("REELSMITH_PG_BINDIR") {
        return Ok(d.into());
    }
    if Path::new("/usr/local/bin/pg_ctl").exists() && Path::new("/usr/local/bin/initdb").exists() {
        return Ok("/usr/local/bin".into());
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
    }
    // Debian's layout: /usr/lib/postgresql/<version>/bin, newest first.
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).filter(|b| b.join("pg_ctl").exists()).collect())
        .unwrap_or_default();
    versions.sort();
    if let Some(dir) = versions.pop() {
        return Ok(dir);
    }
    Err(io::Error::new(io::ErrorKind::NotFound, "no PostgreSQL server binaries (initdb, pg_ctl) found"))
}

/// A user other than root to run the server as, with its uid and gid.
fn unprivileged_user() -> io::Result<Option<(String, u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        let Ok(c) = std::ffi::CString::new(name) else { continue };
        // SAFETY: c is a valid C string; the result is only read before the next getpw call.
        let pw = unsafe { libc::getpwnam(c.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: non-null getpwnam result points at a valid passwd record.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            return Ok(Some((name.to_string(), uid, gid)));
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, "running as root and no postgres or nobody user to run as"))
}

impl PrivatePostgres {
    /// Initializes a fresh cluster in a temporary folder and starts it on `port`
    /// (127.0.0.1 only, trust authentication, user `postgres`, fsync off).
    pub fn start(port: u16) -> io::Result<Self> {
        let bindir = bindir()?;
        let user = unprivileged_user()?;
        let base = std::env::temp_dir().join(format!("reelsmith-pg-{}", crate::new_id("pg")));
        std::fs::create_dir_all(&base)?;
        if let Some((_, uid, gid)) = &user {
            std::os::unix::fs::chown(&base, Some(*uid), Some(*gid))?;
        }
        let pg = Self { data: base.join("data"), base, port, bindir, run_as: user.map(|u| u.0) };
        let data = pg.data.to_string_lossy().into_owned();
        pg.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])?;
        pg.start_again()?;
        Ok(pg)
    }

    /// Starts a free port's server.
    pub fn start_on_free_port() -> io::Result<Self> {
        Self::start(free_port()?)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Kills the server at once (`pg_ctl stop -m immediate`): clients see their connections drop.
    pub fn stop(&self) -> io::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
    }

    /// Starts the server again, same data folder and port; returns once it accepts connections.
    pub fn start_again(&self) -> io::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        let log = self.base.join("server.log").to_string_lossy().into_owned();
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=off -c max_connections=50",
            self.port,
            self.base.display()
        );
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start"])
    }

    fn run(&self, program: &str, args: &[&str]) -> io::Result<()> {
        let program = self.bindir.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        // The server user may not be allowed into our working directory.
        let out = cmd.args(args).current_dir(&self.base).output()?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.base.join("server.log")).unwrap_or_default();
        let tail: String =
            log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        Err(io::Error::other(format!(
            "{} {args:?} failed ({}): {}{}\n{tail}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
