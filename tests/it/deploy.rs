//! The deployment files stay valid: `docker-compose.yml` passes
//! `docker-compose config` (no Docker engine is needed for that).

use anyhow::{Context, Result};

use crate::support::repo_path;

#[test]
fn docker_compose_file_is_valid() -> Result<()> {
    let out = std::process::Command::new("docker-compose")
        .args(["config", "-q"])
        .current_dir(repo_path(""))
        .output()
        .context("running docker-compose (apt-get install docker-compose; .ci/run installs it)")?;
    assert!(out.status.success(), "docker-compose config: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
