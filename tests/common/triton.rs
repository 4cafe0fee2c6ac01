//! A real Triton Inference Server (tests/reference/triton_server.py: NVIDIA's server through
//! nvidia-pytriton, each model in ONNX Runtime on the CPU) on free local ports, which a test can
//! kill and start again on the same ports.

use std::fs::File;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::free_port;
use super::repo_root;

/// Starting takes 10-15 s alone; several servers and runs sharing two cores take longer.
const STARTUP: Duration = Duration::from_secs(180);

/// Ends every server this `TritonServer` started, when it is dropped or when the test process
/// ends without dropping it (a server in a `static`): the test process holds this shell's stdin,
/// which the kernel closes when it exits. Each start is a process group of its own (the script,
/// its tritonserver and the Python backend stubs, which can outlive a killed server) listed in
/// `$1/groups`: SIGTERM, up to 10 s to stop, then SIGKILL; the shared memory pytriton names after
/// the script's process (left when it was killed) and the directory go too.
const WATCHDOG: &str = r#"read line
groups=$(cat "$1/groups" 2>/dev/null)
for g in $groups; do kill -TERM "-$g" 2>/dev/null; done
i=0; while [ $i -lt 100 ]; do
  alive=; for g in $groups; do kill -0 "-$g" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && break; sleep 0.1; i=$((i+1))
done
for g in $groups; do kill -KILL "-$g" 2>/dev/null; rm -f /dev/shm/pytrtion"$g"-*; done
rm -rf "$1""#;

/// The Python that runs Triton: `SAPIENS_TRITON_PYTHON`, else the project's `.venv-triton`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SAPIENS_TRITON_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv-triton/bin/python");
    assert!(
        venv.exists(),
        "no Triton environment at {}: run scripts/setup.sh (or set SAPIENS_TRITON_PYTHON)",
        venv.display()
    );
    venv
}

pub struct TritonServer {
    pub grpc_port: u16,
    http_port: u16,
    pub metrics_port: u16,
    /// `NAME=PATH.onnx` arguments.
    models: Vec<String>,
    process: Option<Child>,
    /// Started with the server, ended last (see [`WATCHDOG`]).
    watchdog: Option<Child>,
    starts: u32,
    dir: tempfile::TempDir,
}

impl TritonServer {
    /// Serves each `(name, onnx file)`; returns once Triton serves them all.
    pub fn start(models: &[(&str, &Path)]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), models)
    }

    /// As [`Self::start`], the server's logs in `dir` (which may hold the models too).
    pub fn start_in(dir: tempfile::TempDir, models: &[(&str, &Path)]) -> Self {
        let mut ports = Vec::new();
        while ports.len() < 3 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let mut server = TritonServer {
            grpc_port: ports[0],
            http_port: ports[1],
            metrics_port: ports[2],
            models: models
                .iter()
                .map(|(name, path)| format!("{name}={}", path.display()))
                .collect(),
            process: None,
            watchdog: None,
            starts: 0,
            dir,
        };
        server.watchdog = Some(
            Command::new("sh")
                .args(["-c", WATCHDOG, "sh"])
                .arg(server.dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("start sh"),
        );
        server.restart();
        server
    }

    /// `triton://127.0.0.1:PORT/MODEL`.
    pub fn url(&self, model: &str) -> String {
        format!("triton://127.0.0.1:{}/{model}", self.grpc_port)
    }

    /// Starts the server (again) on its ports, once a killed one's Triton has let them go: it
    /// waits up to 30 s for requests in flight (whose model died with the server process) and
    /// the script itself only waits that long.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "the server is running");
        let deadline = Instant::now() + Duration::from_secs(90);
        for port in [self.grpc_port, self.http_port, self.metrics_port] {
            while TcpListener::bind(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "port {port} stays in use");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        self.starts += 1;
        let stdout = self
            .dir
            .path()
            .join(format!("server-{}.stdout", self.starts));
        let stderr = self
            .dir
            .path()
            .join(format!("server-{}.stderr", self.starts));
        let ports = [
            ("--grpc-port", self.grpc_port),
            ("--http-port", self.http_port),
            ("--metrics-port", self.metrics_port),
        ];
        let mut command = Command::new(python());
        command.arg(repo_root().join("tests/reference/triton_server.py"));
        for (flag, port) in ports {
            command.arg(flag).arg(port.to_string());
        }
        let mut process = command
            .args(&self.models)
            // Triton's workspace and pytriton's model folders, which a killed server leaves behind.
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .process_group(0)
            .spawn()
            .expect("start tests/reference/triton_server.py");
        let mut groups = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("groups"))
            .unwrap();
        writeln!(groups, "{}", process.id()).unwrap();
        let deadline = Instant::now() + STARTUP;
        let log = || std::fs::read_to_string(&stderr).unwrap_or_default();
        while !std::fs::read_to_string(&stdout)
            .unwrap_or_default()
            .lines()
            .any(|l| l == "ready")
        {
            if let Some(status) = process.try_wait().unwrap() {
                panic!(
                    "the Triton server exited ({status}) before it was ready:\n{}",
                    log()
                );
            }
            if Instant::now() > deadline {
                let _ = process.kill();
                panic!("the Triton server was not ready in {STARTUP:?}:\n{}", log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.process = Some(process);
    }

    /// SIGKILL to the server process, as a crash: its Triton (started with a parent-death
    /// SIGTERM) unloads the models and exits by itself moments later.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().unwrap();
            process.wait().unwrap();
        }
    }

    /// SIGTERM, the way the server stops cleanly, and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &process.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while process.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = process.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = process.wait();
        }
    }

    /// Ends what is left of every start and waits for it (see [`WATCHDOG`]).
    fn end_every_start(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }

    /// The Prometheus metrics: `nv_inference_request_success` and the like, per model.
    pub fn metrics(&self) -> String {
        super::process::http_get(&self.metrics_port.to_string(), "/metrics")
    }

    /// A counter of `model` (version 1) from [`Self::metrics`].
    pub fn counter(&self, name: &str, model: &str) -> f64 {
        let metrics = self.metrics();
        let series = format!("{name}{{model=\"{model}\",version=\"1\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for TritonServer {
    fn drop(&mut self) {
        self.stop();
        self.end_every_start();
        self.remove_model_folders();
    }
}

impl TritonServer {
    /// Triton copies each model's files into a /tmp/folderXXXXXX of its own (its config naming
    /// the workspace, in this server's directory), which a Triton that stops without unloading
    /// its models (a killed server's, after 30 s) leaves behind.
    fn remove_model_folders(&self) {
        let Ok(entries) = std::fs::read_dir("/tmp") else {
            return;
        };
        let ours = self.dir.path().display().to_string();
        for entry in entries.flatten() {
            let folder = entry.path();
            let is_model_folder = entry.file_name().to_string_lossy().starts_with("folder");
            if is_model_folder
                && std::fs::read_to_string(folder.join("config.pbtxt"))
                    .is_ok_and(|config| config.contains(&ours))
            {
                let _ = std::fs::remove_dir_all(&folder);
            }
        }
    }
}
