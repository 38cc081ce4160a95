//! Child processes of dump and restore tools: killed when dropped, stderr kept for errors.
//! Every tool Lifeboat runs starts in [`start`], which removes the secrets the configuration
//! names from its environment (see `secret::scrub`); engines only say what to run.

use super::EngineError;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Keeps at most this much of a tool's stderr (its end, where the cause usually is).
const STDERR_LIMIT: usize = 4 << 10;
/// Keeps at most this much of each stderr line: the `mariadb` client echoes a failed
/// statement, which may be megabytes of row data, before its error line.
const LINE_LIMIT: usize = 300;

/// The end of a tool's stderr, bounded, each long line cut, and saying what was cut: this is
/// what errors (and the catalog) hold.
#[derive(Default)]
struct StderrTail {
    kept: Vec<u8>,
    line: usize,
    cut_in_line: u64,
    dropped: u64,
}

impl StderrTail {
    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                self.end_line();
                self.kept.push(b);
                self.line = 0;
            } else if self.line < LINE_LIMIT {
                self.kept.push(b);
                self.line += 1;
            } else {
                self.cut_in_line += 1;
            }
        }
        if self.kept.len() > STDERR_LIMIT {
            let drop = self.kept.len() - STDERR_LIMIT;
            self.kept.drain(..drop);
            self.dropped += drop as u64;
        }
    }

    fn end_line(&mut self) {
        if self.cut_in_line > 0 {
            let note = format!("… [{} more bytes of this line cut]", self.cut_in_line);
            self.kept.extend_from_slice(note.as_bytes());
            self.cut_in_line = 0;
        }
    }

    fn text(mut self) -> String {
        self.end_line();
        let text = String::from_utf8_lossy(&self.kept).trim().to_string();
        if self.dropped > 0 {
            format!("[{} earlier bytes cut] …{text}", self.dropped)
        } else {
            text
        }
    }
}

/// The one place a child tool is started: killed if its handle is dropped, and without any
/// environment variable the configuration names as a secret, except those the caller set on
/// `cmd` itself (the tool's own password, as `PGPASSWORD`).
#[allow(clippy::disallowed_methods)] // the spawn every other module is kept from
fn start(mut cmd: Command) -> std::io::Result<Child> {
    crate::secret::scrub(&mut cmd);
    cmd.kill_on_drop(true).spawn()
}

/// Runs `program --version` and returns what it printed, for comparing the tool's version
/// with a server's.
pub async fn version(program: &str) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let child = start(cmd).map_err(|e| format!("`{program} --version`: {e}"))?;
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .map_err(|_| format!("`{program} --version` did not answer within 15 s"))?
        .map_err(|e| format!("`{program} --version`: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub struct Tool {
    pub tenant: String,
    pub name: String,
    pub child: Child,
    stderr: JoinHandle<String>,
}

impl Tool {
    /// Spawns `cmd` with piped stdio; the process is killed if this value is dropped.
    pub fn spawn(tenant: &str, name: &str, mut cmd: Command) -> Result<Tool, EngineError> {
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = start(cmd).map_err(|e| EngineError::Other {
            tenant: tenant.to_string(),
            detail: format!("cannot start {name}: {e} (is it installed and on PATH?)"),
        })?;
        let mut err = child.stderr.take().expect("stderr is piped");
        let stderr = tokio::spawn(async move {
            let mut kept = StderrTail::default();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                kept.feed(&buf[..n]);
            }
            kept.text()
        });
        Ok(Tool {
            tenant: tenant.to_string(),
            name: name.to_string(),
            child,
            stderr,
        })
    }

    /// Runs `cmd` with `input` streamed to its stdin, then waits for it. The tool's own error
    /// (with its stderr) wins over the broken pipe it causes.
    pub async fn feed(
        tenant: &str,
        name: &str,
        mut cmd: Command,
        mut input: crate::storage::ObjectReader,
    ) -> Result<(), EngineError> {
        cmd.stdin(std::process::Stdio::piped());
        let mut tool = Tool::spawn(tenant, name, cmd)?;
        let mut stdin = tool.child.stdin.take().expect("stdin is piped");
        let copied = tokio::io::copy(&mut input, &mut stdin).await;
        drop(stdin);
        match (copied, tool.wait().await) {
            (_, Err(e)) => Err(e),
            (Err(e), Ok(())) => Err(EngineError::Other {
                tenant: tenant.to_string(),
                detail: format!("streaming the dump into {name}: {e}"),
            }),
            (Ok(_), Ok(())) => Ok(()),
        }
    }

    /// Waits for the tool; a non-zero exit becomes an error carrying its stderr.
    pub async fn wait(mut self) -> Result<(), EngineError> {
        let status = self.child.wait().await.map_err(|e| EngineError::Other {
            tenant: self.tenant.clone(),
            detail: format!("waiting for {}: {e}", self.name),
        })?;
        let stderr = self.stderr.await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(EngineError::Tool {
                tenant: self.tenant,
                tool: self.name,
                status: status.to_string(),
                stderr,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tools_see_no_configured_secret_but_their_own() {
        // An inherited variable the configuration names as a secret source (cargo sets this
        // one for every test run; a test cannot set one for itself without `unsafe`).
        let inherited = "CARGO_PKG_NAME";
        assert!(std::env::var(inherited).is_ok(), "run by cargo test");
        crate::secret::SecretSource::from_pair("password", Some(inherited.into()), None).unwrap();
        // A secret variable the engine sets for the tool itself, as PGPASSWORD is.
        let own = "LIFEBOAT_TEST_TOOL_PASSWORD";
        crate::secret::SecretSource::from_pair("own-password", Some(own.into()), None).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!("echo \"${{{inherited}-unset}} ${{{own}-unset}}\""),
        ])
        .env(own, "its-own");
        let mut tool = Tool::spawn("t", "sh", cmd).unwrap();
        let mut out = String::new();
        let mut stdout = tool.child.stdout.take().unwrap();
        stdout.read_to_string(&mut out).await.unwrap();
        tool.wait().await.unwrap();
        assert_eq!(out.trim(), "unset its-own");
    }

    #[test]
    fn stderr_is_bounded_and_says_what_was_cut() {
        let mut tail = StderrTail::default();
        tail.feed(b"--------------\nINSERT INTO `big` VALUES (1,0x");
        for _ in 0..3000 {
            tail.feed(&[b'A'; 4096]);
        }
        tail.feed(b")\n--------------\n\nERROR 2006 (HY000) at line 47: Server has gone away\n");
        let text = tail.text();
        assert!(text.len() < 1000, "{text}");
        assert!(text.contains("more bytes of this line cut]"), "{text}");
        assert!(text.ends_with("ERROR 2006 (HY000) at line 47: Server has gone away"));

        let mut tail = StderrTail::default();
        for i in 0..2000 {
            tail.feed(format!("warning {i}\n").as_bytes());
        }
        let text = tail.text();
        assert!(text.len() <= STDERR_LIMIT + 40, "{}", text.len());
        assert!(
            text.starts_with('[') && text.contains("earlier bytes cut]"),
            "{text}"
        );
        assert!(text.ends_with("warning 1999"));
    }
}
