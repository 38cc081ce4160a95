//! The test harness itself: ports are never handed out twice, a daemon that could not bind is
//! started again on a new port, and a failing test leaves no process behind.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;
use support::*;

/// The ephemeral range the kernel picks port-0 binds and outgoing connections from.
fn ephemeral() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut it = text.split_whitespace().map(|n| n.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Ports taken by a test process beside this one (this binary, run again with
/// `LIFEBOAT_TEST_PORTS` set), printed one per line.
#[test]
fn ports_for_a_sibling_process() {
    let n: usize = std::env::var("LIFEBOAT_TEST_PORTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let (low, high) = ephemeral();
    let mut seen = HashSet::new();
    for _ in 0..n {
        let p = free_port();
        assert!(!(low..=high).contains(&p), "{p} is in the ephemeral range");
        assert!(seen.insert(p), "{p} handed out twice");
        println!("allocated-port={p}");
    }
}

/// 2,000 ports asked for by four threads at once, while another test process takes 500 of its
/// own: no port is given twice, here or across the two processes, and none comes from the
/// kernel's ephemeral range.
#[test]
fn the_allocator_never_hands_out_a_port_twice() {
    let sibling = std::thread::spawn(|| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "ports_for_a_sibling_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LIFEBOAT_TEST_PORTS", "500")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            // The harness may print its own words before the first one, on the same line.
            .filter_map(|l| l.rsplit_once("allocated-port=").map(|(_, p)| p))
            .map(|p| p.trim().parse::<u16>().unwrap())
            .collect::<Vec<_>>()
    });
    let threads: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| (0..500).map(|_| free_port()).collect::<Vec<_>>()))
        .collect();
    let mine: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let theirs = sibling.join().unwrap();
    assert_eq!((mine.len(), theirs.len()), (2000, 500));
    let (low, high) = ephemeral();
    let mut seen = HashSet::new();
    for p in mine.iter().chain(&theirs) {
        assert!(seen.insert(*p), "port {p} was handed out twice");
        assert!(!(low..=high).contains(p), "{p} is in the ephemeral range");
    }
}

/// A daemon whose port is taken by the time it binds (here by the test itself) is not a failed
/// test: it is started again on a new port, and it answers there.
#[test]
fn a_serve_that_cannot_bind_is_started_again_on_a_new_port() {
    let inst = Install::new();
    let taken = free_port();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", taken)).unwrap();
    inst.write_config(&format!(
        "{}[server]\nlisten = \"127.0.0.1:{taken}\"\n\n{DIR_REGIONS}",
        inst.head()
    ));
    let serve = Serve::start(&inst.config, &[taken], &[]);
    assert_ne!(serve.port(), taken);
    let (code, body) = http_get(serve.port(), "/healthz").unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let config = std::fs::read_to_string(&inst.config).unwrap();
    assert!(config.contains(&format!("127.0.0.1:{}\"", serve.port())));
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
    drop(squatter);
}

/// A test that panics while its daemon runs leaves no daemon: the process (and its group) is
/// gone once the panic has unwound.
#[test]
fn a_panicking_test_leaves_no_daemon_behind() {
    let inst = Install::new();
    let port = free_port();
    inst.write_config(&format!(
        "{}[server]\nlisten = \"127.0.0.1:{port}\"\n\n{DIR_REGIONS}",
        inst.head()
    ));
    let pid = std::sync::Mutex::new(0);
    let unwound = std::panic::catch_unwind(|| {
        let serve = Serve::start(&inst.config, &[port], &[]);
        *pid.lock().unwrap() = serve.pid();
        panic!("the test fails while serve runs");
    });
    assert!(unwound.is_err());
    let pid = *pid.lock().unwrap();
    assert_ne!(pid, 0);
    until("the daemon to be gone", Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
}
