//! `TestGarage`: a single-node Garage (S3-compatible server) on free 127.0.0.1 ports in a
//! temp dir, with one key and one bucket, killed on drop. For backup tests and benchmarks.
//!
//! The binary comes from `$GARAGE_BIN`, else `$ETCD_OPERATOR_CACHE/garage/bin/garage`
//! (default cache `~/.cache/etcd-operator`), where `scripts/install-test-deps` builds it.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use super::ports::free_port;
use super::wait::{WaitTimeout, wait_for};
use crate::api::s3::S3Connection;
use crate::backup::StaticCredentials;

/// Overrides where the Garage binary is.
pub const GARAGE_BIN_ENV: &str = "GARAGE_BIN";
/// The region Garage signs for (`s3_region` in its config).
pub const REGION: &str = "garage";
/// The bucket every `TestGarage` starts with.
pub const BUCKET: &str = "backups";

/// How long a fresh Garage may take to serve S3 (typically well under 1 s).
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How often a start is retried when another process took one of its ports meanwhile.
const START_ATTEMPTS: usize = 3;
/// The key name the test credentials are imported under.
const KEY_NAME: &str = "test";

/// What can go wrong running a test Garage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("garage not found at {path} (set GARAGE_BIN or run scripts/install-test-deps)")]
    NotInstalled { path: PathBuf },

    #[error("could not find a free port")]
    NoFreePort(#[source] io::Error),

    #[error("could not prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("could not start {what}")]
    Spawn {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("garage {args} failed ({status}): {stderr}")]
    Command {
        args: String,
        status: ExitStatus,
        stderr: String,
    },

    #[error("garage {args} printed something unexpected: {output}")]
    Output { args: String, output: String },

    #[error("garage server exited ({status}); last log lines:\n{log_tail}")]
    Exited {
        status: ExitStatus,
        log_tail: String,
    },

    #[error(transparent)]
    Wait(#[from] WaitTimeout),
}

impl Error {
    fn is_port_clash(&self) -> bool {
        matches!(self, Error::Exited { log_tail, .. }
            if log_tail.to_ascii_lowercase().contains("address already in use"))
    }
}

/// The Garage binary: `$GARAGE_BIN`, else the cache `scripts/install-test-deps` builds into.
///
/// # Errors
/// [`Error::NotInstalled`] naming where it looked.
pub fn garage_bin() -> Result<PathBuf, Error> {
    let path = match std::env::var_os(GARAGE_BIN_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let cache = match std::env::var_os("ETCD_OPERATOR_CACHE") {
                Some(c) if !c.is_empty() => PathBuf::from(c),
                _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/etcd-operator"),
            };
            cache.join("garage/bin/garage")
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::NotInstalled { path })
    }
}

/// A running single-node Garage with key `test` owning bucket [`BUCKET`].
///
/// # Guarantees
/// Dropping it (also while a test panics) SIGKILLs and reaps the server before the temp dir
/// is removed; on panic the dir is kept and the server's last log lines are printed. The
/// server also gets SIGKILL if the thread that started it dies (`PR_SET_PDEATHSIG`).
pub struct TestGarage {
    dir: TempDir,
    bin: PathBuf,
    config: PathBuf,
    log_path: PathBuf,
    child: Option<std::process::Child>,
    endpoint: String,
    credentials: StaticCredentials,
}

impl TestGarage {
    /// Starts Garage, assigns its layout, imports a random key, creates and allows
    /// [`BUCKET`], and waits until S3 answers for it.
    pub async fn start() -> Result<Self, Error> {
        let bin = garage_bin()?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&bin).await {
                Ok(garage) => return Ok(garage),
                Err(e) if e.is_port_clash() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("START_ATTEMPTS > 0"))
    }

    async fn try_start(bin: &Path) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("garage-test-")
            .tempdir()
            .map_err(|source| Error::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let port = || free_port().map_err(Error::NoFreePort);
        let (rpc, s3, admin) = (port()?, port()?, port()?);
        let config = dir.path().join("garage.toml");
        let text = format!(
            "metadata_dir = \"{meta}\"\n\
             data_dir = \"{data}\"\n\
             db_engine = \"sqlite\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{secret}\"\n\
             [s3_api]\n\
             s3_region = \"{REGION}\"\n\
             api_bind_addr = \"127.0.0.1:{s3}\"\n\
             [admin]\n\
             api_bind_addr = \"127.0.0.1:{admin}\"\n",
            meta = dir.path().join("meta").display(),
            data = dir.path().join("data").display(),
            secret = random_hex(32)?,
        );
        write_private(&config, &text)?;
        let log_path = dir.path().join("garage.log");
        let credentials =
            StaticCredentials::new(format!("GK{}", random_hex(12)?), random_hex(32)?, None);
        let mut garage = Self {
            bin: bin.to_owned(),
            config,
            log_path,
            child: None,
            endpoint: format!("http://127.0.0.1:{s3}"),
            credentials,
            dir,
        };
        garage.child = Some(garage.spawn_server()?);
        garage.set_up().await?;
        Ok(garage)
    }

    /// The S3 endpoint URL, e.g. `http://127.0.0.1:15123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bucket that exists from the start.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// Credentials of the key that owns every bucket made here.
    pub fn credentials(&self) -> StaticCredentials {
        self.credentials.clone()
    }

    /// How to reach this Garage: its endpoint, region `garage`, path-style.
    pub fn connection(&self) -> S3Connection {
        S3Connection {
            endpoint: Some(self.endpoint.clone()),
            region: Some(REGION.to_owned()),
            force_path_style: Some(true),
            credentials_secret: None,
        }
    }

    /// A client signed with [`credentials`](Self::credentials).
    pub async fn client(&self) -> aws_sdk_s3::Client {
        crate::backup::client(&self.connection(), Some(self.credentials())).await
    }

    /// Puts the empty snapshot ([`crate::backup::member_restore::EMPTY_SNAPSHOT`]) at `key`
    /// of `bucket` with `metadata`, as a backup would; returns its ETag.
    ///
    /// # Panics
    /// When the put fails.
    pub async fn put_snapshot(
        &self,
        bucket: &str,
        key: &str,
        metadata: &crate::backup::SnapshotMetadata,
    ) -> String {
        let put = self
            .client()
            .await
            .put_object()
            .bucket(bucket)
            .key(key)
            .set_metadata(Some(metadata.to_map()))
            .body(
                crate::backup::member_restore::EMPTY_SNAPSHOT
                    .to_vec()
                    .into(),
            )
            .send()
            .await
            .expect("put the snapshot");
        put.e_tag().expect("an ETag").to_owned()
    }

    /// Creates bucket `name` (3 to 63 characters) owned by the test key.
    pub async fn create_bucket(&self, name: &str) -> Result<(), Error> {
        self.garage(&["bucket", "create", name]).await?;
        self.garage(&[
            "bucket", "allow", "--read", "--write", "--owner", name, "--key", KEY_NAME,
        ])
        .await?;
        Ok(())
    }

    /// The temp dir holding the config, data and `garage.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    async fn set_up(&mut self) -> Result<(), Error> {
        let node = self.wait_rpc().await?;
        let node_id = node.split('@').next().unwrap_or(&node).to_owned();
        self.garage(&["layout", "assign", "-z", "dc1", "-c", "1G", &node_id])
            .await?;
        self.garage(&["layout", "apply", "--version", "1"]).await?;
        let (id, secret) = (
            self.credentials.access_key_id.clone(),
            self.credentials.secret_access_key().to_owned(),
        );
        self.garage(&["key", "import", "--yes", "-n", KEY_NAME, &id, &secret])
            .await?;
        self.create_bucket(BUCKET).await?;
        let client = self.client().await;
        wait_for(READY_WITHIN, "garage serving s3", || {
            let head = client.head_bucket().bucket(BUCKET).send();
            async move { head.await.map(drop) }
        })
        .await?;
        Ok(())
    }

    /// Waits until the server answers RPC; returns its `<node id>@<addr>`.
    async fn wait_rpc(&mut self) -> Result<String, Error> {
        let (bin, config) = (self.bin.clone(), self.config.clone());
        let child = self.child.as_mut().expect("server spawned");
        let answered = wait_for(READY_WITHIN, "garage answering rpc", || {
            let exited = child.try_wait();
            let (bin, config) = (bin.clone(), config.clone());
            async move {
                if let Ok(Some(status)) = exited {
                    return Ok(Err(status));
                }
                // `node id` reads a local file; `status` needs the server to answer.
                run(&bin, &config, &["status"]).await?;
                run(&bin, &config, &["node", "id", "-q"]).await.map(Ok)
            }
        })
        .await?;
        match answered {
            Ok(node) => Ok(node),
            Err(status) => {
                self.child = None;
                Err(Error::Exited {
                    status,
                    log_tail: log_tail(&self.log_path, 30),
                })
            }
        }
    }

    async fn garage(&self, args: &[&str]) -> Result<String, Error> {
        run(&self.bin, &self.config, args).await
    }

    fn spawn_server(&self) -> Result<std::process::Child, Error> {
        let io_err = |source| Error::Io {
            path: self.log_path.clone(),
            source,
        };
        let log = std::fs::File::create(&self.log_path).map_err(io_err)?;
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.arg("-c")
            .arg(&self.config)
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err)?)
            .stderr(log);
        clean_env(&mut cmd);
        use std::os::unix::process::CommandExt as _;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
            });
        }
        cmd.spawn().map_err(|source| Error::Spawn {
            what: "garage server".into(),
            source,
        })
    }
}

impl Drop for TestGarage {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "garage test server kept in {}; last log lines:\n{}",
                self.dir.path().display(),
                log_tail(&self.log_path, 15)
            );
        }
    }
}

impl std::fmt::Debug for TestGarage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestGarage")
            .field("endpoint", &self.endpoint)
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// Runs `garage -c <config> <args>` and returns its trimmed stdout.
async fn run(bin: &Path, config: &Path, args: &[&str]) -> Result<String, Error> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("-c").arg(config).args(args).stdin(Stdio::null());
    clean_env(cmd.as_std_mut());
    let output = cmd.output().await.map_err(|source| Error::Spawn {
        what: format!("garage {}", args.join(" ")),
        source,
    })?;
    if !output.status.success() {
        return Err(Error::Command {
            args: shown_args(args),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if args == ["node", "id", "-q"] && !stdout.contains('@') {
        return Err(Error::Output {
            args: shown_args(args),
            output: stdout,
        });
    }
    Ok(stdout)
}

/// `args` for messages, with the secret of `key import` left out.
fn shown_args(args: &[&str]) -> String {
    match args {
        ["key", "import", ..] => "key import".to_owned(),
        _ => args.join(" "),
    }
}

/// Garage reads `GARAGE_*` variables as settings; ours (e.g. `GARAGE_BIN`) are not for it.
fn clean_env(cmd: &mut std::process::Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GARAGE_") {
            cmd.env_remove(key);
        }
    }
}

/// `bytes` random bytes from the kernel, as lowercase hex.
fn random_hex(bytes: usize) -> Result<String, Error> {
    let path = Path::new("/dev/urandom");
    let mut buf = vec![0u8; bytes];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
    Ok(hex::encode(buf))
}

/// Writes a file only its owner can read (it holds the RPC secret).
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
}

fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
