//! The test harness itself: ports are never handed out twice, a daemon that could not bind is
//! started again on a new port, and a failing test leaves no process behind.

mod support;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

/// The ephemeral range the kernel picks port-0 binds and outgoing connections from.
fn ephemeral() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut it = text.split_whitespace().map(|n| n.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Ports taken by a test process beside this one (this binary, run again with
/// `LIFEBOAT_TEST_PORTS` set), printed one per line. As a sibling it then holds its ports until
/// its standard input closes: a process that has ended has released its blocks, and another
/// may rightly take them again.
#[test]
fn ports_for_a_sibling_process() {
    let sibling = std::env::var("LIFEBOAT_TEST_PORTS").ok();
    let n: usize = sibling.as_deref().map_or(100, |n| n.parse().unwrap());
    let (low, high) = ephemeral();
    let mut seen = HashSet::new();
    for _ in 0..n {
        let p = free_port();
        assert!(!(low..=high).contains(&p), "{p} is in the ephemeral range");
        assert!(seen.insert(p), "{p} handed out twice");
        println!("allocated-port={p}");
    }
    if sibling.is_some() {
        println!("allocated-all");
        std::io::Write::flush(&mut std::io::stdout()).unwrap();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new()).unwrap();
    }
}

/// 2,000 ports asked for by four threads at once, while another test process takes 500 of its
/// own: no port is given twice, here or across the two processes, and none comes from the
/// kernel's ephemeral range.
#[test]
fn the_allocator_never_hands_out_a_port_twice() {
    // The sibling starts at this process's block: only the cross-process lock keeps it from
    // handing out the same ports.
    let first = free_port();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ports_for_a_sibling_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LIFEBOAT_TEST_PORTS", "500")
        .env(
            "LIFEBOAT_TEST_PORT_BLOCK",
            ports::block_of(first).to_string(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Reads the sibling's ports, sends them once it has all, and drains what it prints after.
    let (send, ports) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut taken = Vec::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.unwrap();
            if line.ends_with("allocated-all") {
                send.send(std::mem::take(&mut taken)).unwrap();
            }
            // The harness may print its own words before the first one, on the same line.
            if let Some((_, p)) = line.rsplit_once("allocated-port=") {
                taken.push(p.trim().parse::<u16>().unwrap());
            }
        }
    });
    let threads: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| (0..500).map(|_| free_port()).collect::<Vec<_>>()))
        .collect();
    let mine: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .chain([first])
        .collect();
    let theirs = ports
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the sibling's ports");
    // Both processes hold every port they took until here; now the sibling may end.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    assert_eq!((mine.len(), theirs.len()), (2001, 500));
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
