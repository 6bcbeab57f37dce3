//! Connecting to the daemon: negotiate the API version and check it is new enough.

use bollard::Docker;

use crate::error::DockerError;

/// Oldest Docker API the backend supports (Docker 20.10).
pub const MIN_API: &str = "1.41";

fn version_tuple(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Connects through the local socket (or `DOCKER_HOST`), negotiating the API version
/// down to what the daemon speaks: a versioned request above it is rejected.
pub async fn connect() -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_local_defaults().map_err(DockerError::Unreachable)?;
    let docker = docker.negotiate_version().await.map_err(DockerError::Unreachable)?;
    let version = docker.version().await.map_err(DockerError::Unreachable)?;
    let api = version.api_version.unwrap_or_default();
    if version_tuple(&api) < version_tuple(MIN_API) {
        return Err(DockerError::TooOld { found: api, needed: MIN_API });
    }
    Ok(docker)
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_compare_numerically() {
        assert!(super::version_tuple("1.41") >= super::version_tuple("1.41"));
        assert!(super::version_tuple("1.9") < super::version_tuple("1.41"));
        assert!(super::version_tuple("1.43") > super::version_tuple("1.41"));
    }
}
