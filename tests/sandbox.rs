//! The code_interpreter sandbox on this machine's kernel, through its public API, with the
//! built `palaver` binary as the `sandbox-exec` helper. The interpreter is
//! `PALAVER_TEST_SANDBOX_PYTHON` (scripts/test sets it to one with numpy and matplotlib).

// Test code: a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used)]

use palaver::config::{CodeInterpreterConfig, SandboxMode};
use palaver::connectors::sandbox::{Execution, LimitHit, Sandbox, SandboxChoice};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The runs of this file share the `nobody` user's process count (RLIMIT_NPROC is per user):
/// a fork bomb next to another run would starve it, so runs take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn python() -> String {
    match std::env::var("PALAVER_TEST_SANDBOX_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PALAVER_TEST_SANDBOX_PYTHON is not set: scripts/test prepares it")
        }
        // Debian's interpreter: the one the runtime image ships.
        _ => "/usr/bin/python3".to_owned(),
    }
}

struct Harness {
    sandbox: Arc<Sandbox>,
    root: tempfile::TempDir,
}

impl Harness {
    fn with(mode: SandboxMode, adjust: impl FnOnce(&mut CodeInterpreterConfig)) -> Harness {
        let root = tempfile::tempdir().unwrap();
        let mut config = CodeInterpreterConfig {
            sandbox: mode,
            python: python(),
            timeout_secs: 20,
            workdir_root: Some(root.path().join("workdirs")),
            ..CodeInterpreterConfig::default()
        };
        adjust(&mut config);
        let helper = Path::new(env!("CARGO_BIN_EXE_palaver"));
        match Sandbox::from_config_with_helper(&config, helper).unwrap() {
            SandboxChoice::Available(sandbox) => Harness { sandbox, root },
            SandboxChoice::Unavailable { reason } => panic!("the sandbox is unavailable: {reason}"),
        }
    }

    fn landlock() -> Harness {
        Harness::with(SandboxMode::Landlock, |_| {})
    }

    /// A directory beside the work directories, standing for the server's own files.
    fn outside(&self) -> PathBuf {
        let dir = self.root.path().join("server");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    async fn run(&self, key: &str, code: &str) -> Execution {
        let _turn = SERIAL.lock().await;
        self.sandbox.run(key, code).await.unwrap()
    }
}

fn bwrap_usable() -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("bwrap").is_file()));
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(on_path || !ci, "bubblewrap is not installed: scripts/test installs it");
    on_path
}

#[tokio::test]
async fn printing_six_times_seven_answers_42() {
    let harness = Harness::landlock();

    let execution = harness.run("k", "print(6*7)").await;

    assert_eq!(execution.output, "42\n");
    assert_eq!((execution.exit_code, execution.limit, execution.truncated), (Some(0), None, false));
    assert!(!execution.is_error());
}

#[tokio::test]
async fn a_virtualenvs_own_packages_are_readable_inside() {
    let venvs = tempfile::tempdir().unwrap();
    let venv = venvs.path().join("venv");
    let created = std::process::Command::new(python())
        .args(["-m", "venv", "--without-pip", "--system-site-packages"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(created.success());
    let site = std::fs::read_dir(venv.join("lib")).unwrap().next().unwrap().unwrap().path().join("site-packages");
    std::fs::write(site.join("venv_marker.py"), "WHERE = 'venv'\n").unwrap();
    let harness = Harness::with(SandboxMode::Landlock, |c| c.python = venv.join("bin/python").display().to_string());

    let execution =
        harness.run("k", "import sys, venv_marker\nprint(venv_marker.WHERE, sys.prefix != sys.base_prefix)").await;

    assert_eq!(execution.output, "venv True\n", "{execution:?}");
}

#[tokio::test]
async fn a_final_expression_is_echoed_like_a_notebook_but_none_is_not() {
    let harness = Harness::landlock();

    let echoed = harness.run("k", "x = 6\nx * 7").await;
    let silent = harness.run("k", "print('a')\nNone").await;

    assert_eq!(echoed.output, "42\n");
    assert_eq!(silent.output, "a\n");
}

#[tokio::test]
async fn an_exception_is_an_error_answer_with_the_cells_traceback() {
    let harness = Harness::landlock();

    let execution = harness.run("k", "def f():\n    return 1 / 0\nf()").await;

    assert_eq!(execution.exit_code, Some(1));
    assert!(execution.is_error());
    assert!(execution.output.contains("File \"<cell>\", line 2, in f"), "{}", execution.output);
    assert!(execution.output.ends_with("ZeroDivisionError: division by zero\n"), "{}", execution.output);
}

#[tokio::test]
async fn written_files_and_a_matplotlib_plot_come_back_as_produced_files() {
    let harness = Harness::landlock();
    let code = "import matplotlib.pyplot as plt\n\
                open('data.csv', 'w').write('a,b\\n1,2\\n')\n\
                plt.plot([1, 2, 3], [1, 4, 9])\n\
                print('plotted')";

    let execution = harness.run("k", code).await;

    assert_eq!(execution.output, "plotted\n", "{execution:?}");
    let names: Vec<&str> = execution.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["data.csv", "figure_0.png"]);
    assert_eq!(&execution.files[0].bytes[..], b"a,b\n1,2\n");
    assert!(execution.files[1].bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
}

#[tokio::test]
async fn numpy_and_pandas_work_inside() {
    let harness = Harness::landlock();

    let execution = harness.run("k", "import numpy as np, pandas as pd\nint(pd.Series(np.arange(10)).sum())").await;

    assert_eq!(execution.output, "45\n", "{execution:?}");
}

#[tokio::test]
async fn files_carry_over_between_runs_of_one_key_but_not_to_another_key() {
    let harness = Harness::landlock();

    let first = harness.run("conv_a:main", "open('state.txt', 'w').write('remembered')").await;
    let same = harness.run("conv_a:main", "print(open('state.txt').read())").await;
    let other = harness.run("conv_b:main", "import os\nprint(os.path.exists('state.txt'))").await;

    assert_eq!(first.files.len(), 1);
    assert_eq!(same.output, "remembered\n");
    assert!(same.files.is_empty(), "a file only read is not produced again");
    assert_eq!(other.output, "False\n");
}

#[tokio::test]
async fn an_infinite_loop_ends_at_the_wall_clock_and_the_next_run_works() {
    // CPU time left high: a busy loop would otherwise hit it as the wall clock ends.
    let harness = Harness::with(SandboxMode::Landlock, |c| {
        c.timeout_secs = 2;
        c.cpu_secs = Some(60);
    });
    let started = Instant::now();

    let looping = harness.run("k", "print('start', flush=True)\nwhile True:\n    pass").await;

    assert_eq!(looping.limit, Some(LimitHit::Timeout));
    assert_eq!(looping.output, "start\n");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(harness.run("k", "print('fine')").await.output, "fine\n");
}

#[tokio::test]
async fn a_fork_bomb_is_capped_and_leaves_no_process() {
    let harness = Harness::landlock();
    let code = "import os\nwhile True:\n    os.fork()";

    let bomb = harness.run("k", code).await;

    assert_eq!(bomb.limit, Some(LimitHit::Processes), "{bomb:?}");
    assert!(bomb.output.contains("BlockingIOError"), "{}", bomb.output);
    let after = harness.run("k", "print('fine')").await;
    assert_eq!(after.output, "fine\n");
}

#[tokio::test]
async fn a_busy_loop_past_its_cpu_seconds_is_stopped_by_the_cpu_limit() {
    let harness = Harness::with(SandboxMode::Landlock, |c| c.cpu_secs = Some(1));

    let execution = harness.run("k", "while True:\n    pass").await;

    assert_eq!(execution.limit, Some(LimitHit::Cpu), "{execution:?}");
    assert_eq!(execution.signal, Some(libc::SIGXCPU));
}

#[tokio::test]
async fn an_expired_work_directory_is_removed_with_its_files() {
    let harness = Harness::with(SandboxMode::Landlock, |c| c.workdir_ttl_secs = 0);
    harness.run("k", "open('state.txt', 'w').write('x')").await;

    let removed = harness.sandbox.remove_expired_workdirs().await;
    let after = harness.run("k", "import os\nprint(os.path.exists('state.txt'))").await;

    assert_eq!(removed, 1);
    assert_eq!(after.output, "False\n");
}

#[tokio::test]
async fn fifty_megabytes_of_output_are_truncated_to_the_cap() {
    let harness = Harness::landlock();
    let code = "import sys\nfor _ in range(50):\n    sys.stdout.write('x' * (1024 * 1024))\nprint('end')";

    let execution = harness.run("k", code).await;

    assert_eq!(execution.exit_code, Some(0));
    assert!(execution.truncated);
    assert_eq!(execution.limit, Some(LimitHit::Output));
    assert_eq!(execution.output.len(), 64 * 1024);
    assert!(execution.report().ends_with("The output was too long and was cut."));
}

#[tokio::test]
async fn a_two_gib_allocation_is_a_memory_error() {
    let harness = Harness::landlock();

    let execution = harness.run("k", "block = bytearray(2 * 1024 ** 3)").await;

    assert_eq!(execution.limit, Some(LimitHit::Memory));
    assert!(execution.output.contains("MemoryError"), "{}", execution.output);
    assert_eq!(harness.run("k", "print('fine')").await.output, "fine\n");
}

#[tokio::test]
async fn system_secrets_and_the_servers_files_cannot_be_read() {
    let harness = Harness::landlock();
    let database = harness.outside().join("palaver.db");
    std::fs::write(&database, "the server's rows").unwrap();
    let code = format!(
        "for path in ['/etc/passwd', '/etc/shadow', {database:?}, '/root']:\n\
         \x20   try:\n\
         \x20       open(path).read()\n\
         \x20       print('read', path)\n\
         \x20   except OSError as e:\n\
         \x20       print('denied', path, type(e).__name__)"
    );

    let execution = harness.run("k", &code).await;

    assert!(!execution.output.contains("read "), "{}", execution.output);
    assert!(execution.output.contains("denied /etc/passwd PermissionError"), "{}", execution.output);
    assert!(
        execution.output.contains(&format!("denied {} PermissionError", database.display())),
        "{}",
        execution.output
    );
    assert!(!execution.output.contains("the server's rows"));
}

#[tokio::test]
async fn the_code_runs_without_privileges_under_a_seccomp_filter() {
    let harness = Harness::landlock();
    let code = "import os\n\
                status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n\
                print(status['NoNewPrivs'].strip(), status['Seccomp'].strip(), os.getuid() != 0, os.getgid() != 0)";

    let execution = harness.run("k", code).await;

    // NoNewPrivs 1; seccomp mode 2 (filter); neither root user nor root group.
    assert_eq!(execution.output, "1 2 True True\n");
}

#[tokio::test]
async fn a_hard_link_cannot_bring_an_outside_file_into_the_work_directory() {
    let harness = Harness::landlock();
    let database = harness.outside().join("palaver.db");
    std::fs::write(&database, "the server's rows").unwrap();
    let code = format!(
        "import os\n\
         try:\n\
         \x20   os.link({database:?}, 'stolen.db')\n\
         \x20   print('linked')\n\
         except OSError as e:\n\
         \x20   print('denied', type(e).__name__)"
    );

    let execution = harness.run("k", &code).await;

    assert_eq!(execution.output, "denied PermissionError\n");
    assert!(execution.files.is_empty());
}

#[tokio::test]
async fn nothing_outside_the_work_directory_can_be_written() {
    let harness = Harness::landlock();
    let outside = harness.outside();
    let escape = outside.join("escape.txt");
    let code = format!(
        "for path in [{escape:?}, '/tmp/palaver-escape-test', '../escape.txt']:\n\
         \x20   try:\n\
         \x20       open(path, 'w').write('out')\n\
         \x20       print('wrote', path)\n\
         \x20   except OSError as e:\n\
         \x20       print('denied', type(e).__name__)"
    );

    let execution = harness.run("k", &code).await;

    assert_eq!(execution.output, "denied PermissionError\n".repeat(3));
    assert!(!escape.exists());
    assert!(!Path::new("/tmp/palaver-escape-test").exists());
    assert!(!harness.root.path().join("workdirs/escape.txt").exists());
}

#[tokio::test]
async fn tcp_udp_and_unix_sockets_reach_nothing() {
    let harness = Harness::landlock();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let unix_path = harness.outside().join("palaver.sock");
    let unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    unix.set_nonblocking(true).unwrap();
    let code = format!(
        "import socket\n\
         attempts = [\n\
         \x20   ('tcp', lambda: socket.create_connection(('127.0.0.1', {tcp_port}), timeout=2)),\n\
         \x20   ('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hi', ('127.0.0.1', {udp_port}))),\n\
         \x20   ('unix', lambda: socket.socket(socket.AF_UNIX).connect({unix_path:?})),\n\
         \x20   ('pair', lambda: socket.socketpair()),\n\
         ]\n\
         for name, attempt in attempts:\n\
         \x20   try:\n\
         \x20       attempt()\n\
         \x20       print(name, 'connected')\n\
         \x20   except OSError as e:\n\
         \x20       print(name, 'denied', e.errno)",
        tcp_port = tcp.local_addr().unwrap().port(),
        udp_port = udp.local_addr().unwrap().port(),
    );

    let execution = harness.run("k", &code).await;

    let eperm = libc::EPERM;
    assert_eq!(
        execution.output,
        format!("tcp denied {eperm}\nudp denied {eperm}\nunix denied {eperm}\npair denied {eperm}\n")
    );
    assert_eq!(tcp.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(udp.recv_from(&mut [0u8; 16]).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(unix.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
}

/// A child that would write `marker` into the work directory two seconds later.
const LATE_MARKER: &str = "import os, time\n\
    if os.fork() == 0:\n\
    \x20   for escape in (os.setsid, lambda: os.setpgid(0, 0)):\n\
    \x20       try:\n\
    \x20           escape()\n\
    \x20           print('escaped', flush=True)\n\
    \x20       except OSError as e:\n\
    \x20           print('denied', e.errno, flush=True)\n\
    \x20   if os.fork() == 0:\n\
    \x20       time.sleep(2)\n\
    \x20       open('marker', 'w').write('survived')\n\
    \x20   os._exit(0)\n\
    time.sleep(0.5)\n\
    print('leader done')";

#[tokio::test]
async fn no_process_survives_the_run_even_after_trying_setsid() {
    let harness = Harness::landlock();

    let execution = harness.run("k", LATE_MARKER).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let check = harness.run("k", "import os\nprint(os.path.exists('marker'))").await;

    let eperm = libc::EPERM;
    assert_eq!(execution.output, format!("denied {eperm}\ndenied {eperm}\nleader done\n"));
    assert_eq!(check.output, "False\n");
}

#[tokio::test]
async fn dropping_the_run_kills_its_processes() {
    let harness = Harness::landlock();
    let code = format!("{LATE_MARKER}\ntime.sleep(30)");

    let cancelled = {
        let _turn = SERIAL.lock().await;
        tokio::time::timeout(Duration::from_secs(1), harness.sandbox.run("k", &code)).await
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let check = harness.run("k", "import os\nprint(os.path.exists('marker'))").await;

    assert!(cancelled.is_err(), "the run was still going when it was dropped");
    assert_eq!(check.output, "False\n");
}

#[tokio::test]
async fn the_code_sees_none_of_palavers_environment() {
    // SAFETY-free in edition 2021; set before any run starts, and only read by children.
    std::env::set_var("PALAVER_SECRET", "hunter2");
    let harness = Harness::landlock();
    let code = "import os\n\
                print(sorted(k for k in os.environ if k.startswith('PALAVER') or 'KEY' in k))\n\
                try:\n\
                \x20   print(open(f'/proc/{os.getppid()}/environ').read())\n\
                except OSError as e:\n\
                \x20   print('parent environ', type(e).__name__)";

    let execution = harness.run("k", code).await;

    assert_eq!(execution.output, "[]\nparent environ PermissionError\n");
}

#[tokio::test]
async fn a_file_larger_than_the_cap_is_stopped_at_the_limit() {
    let harness = Harness::with(SandboxMode::Landlock, |c| c.max_file_mb = 1);

    let execution = harness.run("k", "open('big.bin', 'wb').write(b'x' * (2 * 1024 * 1024))").await;

    assert_eq!(execution.limit, Some(LimitHit::FileSize), "{execution:?}");
    assert!(execution.output.contains("File too large"), "{}", execution.output);
}

#[tokio::test]
async fn the_operators_command_gets_the_code_on_stdin_and_answers_in_json() {
    let script = "code=$(cat); printf '{\"output\": \"ran %s\"}' \"$code\"; echo made > made.txt";
    let harness = Harness::with(SandboxMode::Command, |c| {
        c.command = vec!["/bin/sh".into(), "-c".into(), script.into()];
    });

    let execution = harness.run("k", "print(1)").await;

    assert_eq!(execution.output, "ran print(1)");
    assert_eq!(execution.files.len(), 1);
    assert_eq!(execution.files[0].name, "made.txt");
}

#[tokio::test]
async fn off_offers_no_sandbox() {
    let config = CodeInterpreterConfig { sandbox: SandboxMode::Off, ..CodeInterpreterConfig::default() };

    let choice = Sandbox::from_config_with_helper(&config, Path::new(env!("CARGO_BIN_EXE_palaver"))).unwrap();

    assert!(matches!(choice, SandboxChoice::Unavailable { reason } if reason.contains("off")));
}

#[tokio::test]
async fn auto_picks_landlock_on_this_kernel() {
    let harness = Harness::with(SandboxMode::Auto, |_| {});

    assert!(harness.sandbox.description().starts_with("Landlock"), "{}", harness.sandbox.description());
}

#[tokio::test]
async fn bubblewrap_confines_the_code_too() {
    if !bwrap_usable() {
        eprintln!("bubblewrap is not installed here; scripts/test installs it");
        return;
    }
    let harness = Harness::with(SandboxMode::Bwrap, |_| {});
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let code = format!(
        "import socket\n\
         open('out.txt', 'w').write('in bwrap')\n\
         for attempt in (lambda: open('/etc/passwd').read(), \
                         lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2)):\n\
         \x20   try:\n\
         \x20       attempt()\n\
         \x20       print('allowed')\n\
         \x20   except OSError as e:\n\
         \x20       print('denied', type(e).__name__)\n\
         6 * 7",
        port = tcp.local_addr().unwrap().port()
    );

    let execution = harness.run("k", &code).await;

    let lines: Vec<&str> = execution.output.lines().collect();
    assert_eq!(lines.len(), 3, "{}", execution.output);
    assert_eq!(lines[0], "denied FileNotFoundError");
    assert!(lines[1].starts_with("denied "), "{}", execution.output);
    assert_eq!(lines[2], "42");
    assert_eq!(execution.files.len(), 1);
    assert_eq!(&execution.files[0].bytes[..], b"in bwrap");
    assert_eq!(tcp.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    // bwrap has no seccomp filter here: setsid succeeds, and the PID namespace dying with
    // bwrap is what ends the escaped child.
    harness.run("escape", LATE_MARKER).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let check = harness.run("escape", "import os\nprint(os.path.exists('marker'))").await;
    assert_eq!(check.output, "False\n");
    let bomb = harness.run("bomb", "import os\nwhile True:\n    os.fork()").await;
    assert_eq!(bomb.limit, Some(LimitHit::Processes), "{bomb:?}");
    let looping = Harness::with(SandboxMode::Bwrap, |c| {
        c.timeout_secs = 1;
        c.cpu_secs = Some(60);
    });
    assert_eq!(looping.run("k", "while True: pass").await.limit, Some(LimitHit::Timeout));
}

/// `cargo test --test sandbox -- --ignored --nocapture overhead`: the cost of the sandbox
/// over a bare `python3 -c pass`, median of 50 runs each.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn overhead_over_a_bare_interpreter() {
    let harness = Harness::landlock();
    let median = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    // Interleaved, so a neighbour's build slows both series alike.
    let mut bare = Vec::new();
    let mut sandboxed = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let status = std::process::Command::new(python()).args(["-c", "pass"]).status().unwrap();
        assert!(status.success());
        bare.push(started.elapsed());
        let started = Instant::now();
        let execution = harness.sandbox.run("bench", "pass").await.unwrap();
        assert_eq!(execution.exit_code, Some(0));
        sandboxed.push(started.elapsed());
    }
    let (bare, sandboxed) = (median(bare), median(sandboxed));
    println!(
        "p50 of 50: bare python -c pass {bare:?}; sandboxed run {sandboxed:?}; overhead {:?}",
        sandboxed.saturating_sub(bare)
    );
}
