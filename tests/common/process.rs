//! `sapiens-stream run` as a child process, as the tests that watch a run from outside use it:
//! its log, its memory, signals, and waiting on what it writes.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::cli::model;

/// Generous: the machine may be busy, and every process here runs a model on the CPU.
pub const PATIENCE: Duration = Duration::from_secs(90);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `sapiens-stream run` child with its stderr in a file; SIGKILLed if the test ends early.
pub struct Sapiens {
    child: Child,
    stderr: PathBuf,
}

impl Sapiens {
    pub fn start(dir: &Path, name: &str, args: &[&str]) -> Self {
        let pose = model("pose17");
        let mut args = args.to_vec();
        args.extend(["--pose-model", pose.to_str().unwrap(), "--no-progress"]);
        Sapiens::run(dir, name, &args)
    }

    /// `sapiens-stream run ARGS`, the models among the arguments.
    pub fn run(dir: &Path, name: &str, args: &[&str]) -> Self {
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_sapiens-stream"))
            .arg("run")
            .args(args)
            .env(
                "RUST_LOG",
                "sapiens_stream=info,sapiens_stream::sink::rtsp=debug",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("start sapiens-stream");
        Sapiens { child, stderr }
    }

    /// A simulated camera: `input` through the model, served on rtsp://127.0.0.1:PORT/cam.
    pub fn camera(dir: &Path, name: &str, port: u16, input: &str, extra: &[&str]) -> Self {
        let output = format!("rtsp://127.0.0.1:{port}/cam");
        let mut args = vec!["--input", input, "--output", output.as_str()];
        args.extend(extra);
        let camera = Sapiens::start(dir, name, &args);
        wait_for(&format!("camera {name} listening"), || {
            camera.assert_running();
            camera.log().contains("serving the overlay video on")
        });
        camera
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn count_in_log(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    pub fn assert_running(&self) {
        let pid = self.child.id();
        let exited = Command::new("kill")
            .args(["-0", &pid.to_string()])
            .status()
            .map_or(true, |s| !s.success());
        assert!(
            !exited,
            "sapiens-stream {pid} exited; its log:\n{}",
            self.log()
        );
    }

    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS in /proc/PID/status");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the process to finish by itself.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.wait_for_exit("after SIGTERM")
    }

    /// Waits for the process to finish by itself; `after` says since what, for the failure.
    pub fn wait_for_exit(&mut self, after: &str) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit {PATIENCE:?} {after}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Sapiens {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET http://127.0.0.1:PORT/PATH` (no token).
pub fn http_get(port: &str, path: &str) -> String {
    ureq::get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap()
}

pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Complete lines of a JSON-lines file (a line being written is not counted).
pub fn complete_lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |bytes| bytes.iter().filter(|b| **b == b'\n').count())
}
