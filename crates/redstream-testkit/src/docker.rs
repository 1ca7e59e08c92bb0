//! The fallback backend: a `redis:7.2` container started through testcontainers, used when no
//! `redis-server` binary is installed and the `docker` feature is on.
//!
//! It honours the same `redis.conf` settings, except TLS; the fault-injection operations
//! (kill, restart, pause, resume) are not available and return [`Error::Unsupported`].

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::builder::Settings;
use crate::error::{Error, Result};
use crate::server::READY_LINE;

/// The pinned image.
const IMAGE: &str = "redis";
/// The pinned image tag.
const TAG: &str = "7.2";
/// Where the generated `redis.conf` is copied inside the container.
const CONF_PATH: &str = "/usr/local/etc/redis/redis.conf";
/// The port the server listens on inside the container.
pub(crate) const CONTAINER_PORT: u16 = 6379;

/// A running Redis container; dropping it removes the container.
pub(crate) struct DockerServer {
    container: ContainerAsync<GenericImage>,
}

impl DockerServer {
    /// The container's id, for `Debug` output.
    pub(crate) fn id(&self) -> &str {
        self.container.id()
    }

    /// Starts the container with `conf` as its `redis.conf` and returns it with the host and
    /// port it is reachable on.
    pub(crate) async fn start(settings: &Settings, conf: String) -> Result<(Self, String, u16)> {
        if settings.tls {
            return Err(Error::Unsupported(
                "TLS is not available with the docker backend; install redis-server".to_owned(),
            ));
        }
        let docker_err = |err: testcontainers::TestcontainersError| {
            Error::Docker(format!(
                "redis-server is not installed, and the {IMAGE}:{TAG} container fallback \
                 failed: {err}"
            ))
        };
        let container = GenericImage::new(IMAGE, TAG)
            .with_exposed_port(CONTAINER_PORT.tcp())
            .with_wait_for(WaitFor::message_on_stdout(READY_LINE))
            .with_copy_to(CONF_PATH, conf.into_bytes())
            .with_cmd(["redis-server", CONF_PATH])
            .with_startup_timeout(settings.ready_timeout)
            .start()
            .await
            .map_err(docker_err)?;
        let host = container.get_host().await.map_err(docker_err)?.to_string();
        let port = container
            .get_host_port_ipv4(CONTAINER_PORT.tcp())
            .await
            .map_err(docker_err)?;
        Ok((Self { container }, host, port))
    }
}
