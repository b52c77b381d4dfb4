//! QEMU user networking on a link-local range: a TCP forward from
//! 127.0.0.1 reaches a server in the guest, and nothing else is reachable.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use cradle_testbed::QemuGuest;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn qemu_host_reaches_guest_through_forwarded_port() {
    let port = free_port();
    let client = thread::spawn(move || {
        let start = Instant::now();
        // QEMU accepts on the host side before the guest listens; retry
        // until the guest's answer arrives.
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut got = String::new();
                let _ = s.read_to_string(&mut got);
                if got.contains("hello-from-guest") {
                    return got;
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
        String::new()
    });
    let script = "ip -4 addr show | grep -o '169.254.100.15/24'\n\
                  timeout 60 nc -l -p 7 -e echo hello-from-guest\n";
    let run = QemuGuest::new()
        .user_net("169.254.100.0/24", &[(port, 7)])
        .run(script)
        .unwrap();
    assert_eq!(
        run.output.lines().next(),
        Some("169.254.100.15/24"),
        "{}",
        run.console
    );
    assert!(client.join().unwrap().contains("hello-from-guest"));
}
