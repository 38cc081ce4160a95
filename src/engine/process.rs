//! Child processes of dump and restore tools: killed when dropped, stderr kept for errors.

use super::EngineError;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Keeps at most this much of a tool's stderr (its end, where the cause usually is).
const STDERR_LIMIT: usize = 16 << 10;

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
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| EngineError::Other {
            tenant: tenant.to_string(),
            detail: format!("cannot start {name}: {e} (is it installed and on PATH?)"),
        })?;
        let mut err = child.stderr.take().expect("stderr is piped");
        let stderr = tokio::spawn(async move {
            let mut kept: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_LIMIT {
                    kept.drain(..kept.len() - STDERR_LIMIT);
                }
            }
            String::from_utf8_lossy(&kept).trim().to_string()
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
