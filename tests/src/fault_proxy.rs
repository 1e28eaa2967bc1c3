//! A TCP proxy in front of the emulator that can cut a connection part-way
//! through a request, for fault-injection tests of multipart uploads: point an
//! SDK client at [`FaultProxy::endpoint`], arm
//! [`FaultProxy::break_after_upstream_bytes`], and the connection that carries
//! the n-th byte sent towards the server after arming is shut down in both
//! directions, as a network failure mid-upload would. The fault is one-shot:
//! it disarms itself when it fires, so whatever comes next (the SDK's
//! `AbortMultipartUpload`, a retry) goes through untouched.
//!
//! The proxy runs on plain std threads (one to accept, two per connection),
//! so it works the same from any tokio runtime, including the current-thread
//! runtime of `#[tokio::test]`. It listens on 127.0.0.1 only and forwards to a
//! loopback upstream only.
//!
//! ```no_run
//! # async fn example() {
//! use integration_tests::fault_proxy::FaultProxy;
//! let proxy = FaultProxy::start(&integration_tests::moto_endpoint());
//! let config = integration_tests::sdk_config(&proxy.endpoint()).await;
//! proxy.break_after_upstream_bytes(6 * 1024 * 1024);
//! // ... an upload through `config` now fails 6 MiB in ...
//! assert_eq!(proxy.faults_fired(), 1);
//! # }
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

/// `armed` holds this when no fault is armed.
const DISARMED: u64 = u64::MAX;

/// Bytes read from one side before they are written to the other.
const CHUNK_BYTES: usize = 64 * 1024;

/// A fault-injecting TCP proxy on `127.0.0.1:<ephemeral port>`; see the
/// module documentation. Dropping it stops accepting connections and closes
/// the ones still open.
pub struct FaultProxy {
    local: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// State shared by the proxy handle and its threads.
struct Shared {
    upstream: SocketAddr,
    stopping: AtomicBool,
    /// Client→server bytes still to forward before the armed fault fires, or
    /// [`DISARMED`].
    armed: AtomicU64,
    faults_fired: AtomicU64,
    forwarded_upstream: AtomicU64,
    connections_accepted: AtomicU64,
    /// Both sockets of every open connection, so that drop can close them.
    open: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, (TcpStream, TcpStream)>> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims `len` client→server bytes against the armed fault. Returns how
    /// many of them may be forwarded and whether the connection must be cut
    /// after forwarding them. Exactly one caller sees `true` per arming.
    fn claim(&self, len: u64) -> (u64, bool) {
        let mut remaining = self.armed.load(Ordering::SeqCst);
        loop {
            if remaining == DISARMED {
                return (len, false);
            }
            let (next, outcome) =
                if len < remaining { (remaining - len, (len, false)) } else { (DISARMED, (remaining, true)) };
            match self.armed.compare_exchange(remaining, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return outcome,
                Err(current) => remaining = current,
            }
        }
    }
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream`, given as the emulator's
    /// endpoint (`http://127.0.0.1:PORT`) or as `127.0.0.1:PORT`.
    ///
    /// # Panics
    /// When `upstream` is not a loopback `host:port` (this proxy never talks to
    /// anything but 127.0.0.1), or when no local port can be bound.
    pub fn start(upstream: &str) -> FaultProxy {
        let address = upstream.trim().trim_start_matches("http://").trim_end_matches('/');
        let upstream: SocketAddr = address
            .parse()
            .unwrap_or_else(|e| panic!("fault proxy: upstream {upstream:?} is not http://127.0.0.1:PORT: {e}"));
        assert!(upstream.ip().is_loopback(), "fault proxy: upstream {upstream} is not a loopback address");

        let listener = TcpListener::bind("127.0.0.1:0").expect("fault proxy: bind 127.0.0.1:0");
        let local = listener.local_addr().expect("fault proxy: local address");
        let shared = Arc::new(Shared {
            upstream,
            stopping: AtomicBool::new(false),
            armed: AtomicU64::new(DISARMED),
            faults_fired: AtomicU64::new(0),
            forwarded_upstream: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("fault-proxy-{}", local.port()))
                .spawn(move || accept_loop(&listener, &shared))
                .expect("fault proxy: spawn the accepting thread")
        };
        FaultProxy { local, shared, acceptor: Some(acceptor) }
    }

    /// The proxy's endpoint, `http://127.0.0.1:<port>`, for `sdk_config`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.local)
    }

    /// Arms a one-shot fault: once `n` more bytes have been forwarded from
    /// clients to the server (counted across all connections from now on),
    /// the connection carrying the n-th byte is shut down in both directions
    /// and the fault disarms itself. `n = 0` cuts the next connection that
    /// sends anything, before forwarding it. Arming again replaces a fault
    /// that has not fired yet.
    pub fn break_after_upstream_bytes(&self, n: u64) {
        assert!(n < DISARMED, "fault proxy: {n} bytes is out of range");
        self.shared.armed.store(n, Ordering::SeqCst);
    }

    /// Whether a fault is armed and has not fired yet.
    pub fn is_armed(&self) -> bool {
        self.shared.armed.load(Ordering::SeqCst) != DISARMED
    }

    /// How many armed faults have fired (connections cut).
    pub fn faults_fired(&self) -> u64 {
        self.shared.faults_fired.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from clients to the server since the proxy started.
    pub fn bytes_forwarded_upstream(&self) -> u64 {
        self.shared.forwarded_upstream.load(Ordering::SeqCst)
    }

    /// Client connections accepted since the proxy started.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.connections_accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accepting thread, which then sees `stopping` and returns,
        // closing the listener.
        drop(TcpStream::connect(self.local));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (client, server) in self.shared.open().values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("endpoint", &self.endpoint())
            .field("upstream", &self.shared.upstream)
            .field("armed", &self.is_armed())
            .field("faults_fired", &self.faults_fired())
            .field("bytes_forwarded_upstream", &self.bytes_forwarded_upstream())
            .finish()
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut next_id = 0_u64;
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.connections_accepted.fetch_add(1, Ordering::SeqCst);
        let Ok(server) = TcpStream::connect(shared.upstream) else {
            // Upstream is down: the client sees its connection closed.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let shared = Arc::clone(shared);
        let spawned = thread::Builder::new().name(format!("fault-proxy-conn-{id}")).spawn(move || {
            if let Err(e) = proxy_connection(id, client, server, &shared) {
                tracing::debug!("fault proxy: connection {id}: {e}");
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("fault proxy: could not spawn a connection thread: {e}");
        }
    }
}

/// Forwards one connection until both directions have ended; client→server
/// on this thread (where faults fire), server→client on another.
fn proxy_connection(id: u64, mut client: TcpStream, mut server: TcpStream, shared: &Shared) -> io::Result<()> {
    shared.open().insert(id, (client.try_clone()?, server.try_clone()?));
    let downstream = {
        let mut from = server.try_clone()?;
        let mut to = client.try_clone()?;
        thread::Builder::new().name(format!("fault-proxy-down-{id}")).spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        })?
    };

    let upstream = forward_upstream(&mut client, &mut server, shared);
    let _ = downstream.join();
    shared.open().remove(&id);
    upstream
}

fn forward_upstream(client: &mut TcpStream, server: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    let mut buffer = vec![0_u8; CHUNK_BYTES];
    loop {
        let read = match client.read(&mut buffer) {
            Ok(0) => {
                // The client finished sending; let the server see it.
                let _ = server.shutdown(Shutdown::Write);
                return Ok(());
            }
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = server.shutdown(Shutdown::Both);
                return Err(e);
            }
        };
        let (forward, cut) = shared.claim(read as u64);
        let forward = usize::try_from(forward).expect("claim never exceeds the chunk");
        if forward > 0 {
            // Counted before the write, so that the count is never behind
            // what the server (and, through it, the client) may have seen.
            shared.forwarded_upstream.fetch_add(forward as u64, Ordering::SeqCst);
            if let Err(e) = server.write_all(&buffer[..forward]) {
                let _ = client.shutdown(Shutdown::Both);
                return Err(e);
            }
        }
        if cut {
            shared.faults_fired.fetch_add(1, Ordering::SeqCst);
            let _ = server.shutdown(Shutdown::Both);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A TCP echo server on 127.0.0.1 counting the bytes it received.
    struct Echo {
        address: SocketAddr,
        received: Arc<AtomicU64>,
    }

    fn echo_server() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let counter = Arc::clone(&counter);
                thread::spawn(move || {
                    let mut buffer = [0_u8; 4096];
                    while let Ok(read) = stream.read(&mut buffer) {
                        if read == 0 {
                            break;
                        }
                        counter.fetch_add(read as u64, Ordering::SeqCst);
                        if stream.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Echo { address, received }
    }

    fn connect(proxy: &FaultProxy) -> TcpStream {
        let stream = TcpStream::connect(proxy.local).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    }

    fn round_trip(stream: &mut TcpStream, message: &[u8]) {
        stream.write_all(message).unwrap();
        let mut echoed = vec![0_u8; message.len()];
        stream.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message);
    }

    /// Reads until the proxy closes the connection; panics on a timeout.
    fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buffer = [0_u8; 4096];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => return all,
                Ok(read) => all.extend_from_slice(&buffer[..read]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    panic!("the connection was not closed: {e}")
                }
                Err(_) => return all, // reset: closed as well
            }
        }
    }

    fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn bytes_pass_both_ways_and_are_counted() {
        let echo = echo_server();
        let proxy = FaultProxy::start(&format!("http://{}/", echo.address));
        assert!(proxy.endpoint().starts_with("http://127.0.0.1:"), "{}", proxy.endpoint());

        let mut first = connect(&proxy);
        round_trip(&mut first, b"hello");
        let mut second = connect(&proxy);
        let large: Vec<u8> = (0..300_000_u32).map(|i| (i % 251) as u8).collect();
        round_trip(&mut second, &large);
        round_trip(&mut first, b"again");

        assert_eq!(proxy.bytes_forwarded_upstream(), 5 + 300_000 + 5);
        assert_eq!(echo.received.load(Ordering::SeqCst), 5 + 300_000 + 5);
        assert_eq!(proxy.connections_accepted(), 2);
        assert_eq!(proxy.faults_fired(), 0);
        assert!(!proxy.is_armed());
    }

    #[test]
    fn a_fault_cuts_the_connection_carrying_the_threshold_byte_then_disarms() {
        let echo = echo_server();
        let proxy = FaultProxy::start(&echo.address.to_string());
        let mut victim = connect(&proxy);
        let mut bystander = connect(&proxy);
        round_trip(&mut victim, b"before arming");
        let before = proxy.bytes_forwarded_upstream();

        // Counting starts at arming and spans connections: 4 + 4 bytes pass,
        // and the fault fires 2 bytes into the victim's next write.
        proxy.break_after_upstream_bytes(10);
        assert!(proxy.is_armed());
        round_trip(&mut victim, b"1234");
        round_trip(&mut bystander, b"5678");
        assert_eq!(proxy.faults_fired(), 0);
        victim.write_all(b"9abcdefgh").unwrap();
        let echoed_after_cut = read_until_closed(&mut victim);
        assert!(b"9a".starts_with(&echoed_after_cut), "{echoed_after_cut:?}");

        assert_eq!(proxy.faults_fired(), 1);
        assert!(!proxy.is_armed());
        assert_eq!(proxy.bytes_forwarded_upstream() - before, 10);
        let expected_at_server = before + 10;
        wait_for("the server to receive exactly the bytes before the cut", || {
            echo.received.load(Ordering::SeqCst) == expected_at_server
        });

        // Disarmed: the other connection and new ones carry any amount.
        let large = vec![7_u8; 100_000];
        round_trip(&mut bystander, &large);
        let mut later = connect(&proxy);
        round_trip(&mut later, &large);
        assert_eq!(proxy.faults_fired(), 1);
        assert_eq!(echo.received.load(Ordering::SeqCst), expected_at_server + 200_000);
    }

    #[test]
    fn a_zero_byte_fault_cuts_the_next_sender_before_forwarding() {
        let echo = echo_server();
        let proxy = FaultProxy::start(&echo.address.to_string());
        proxy.break_after_upstream_bytes(0);
        let mut victim = connect(&proxy);
        victim.write_all(b"never arrives").unwrap();
        assert_eq!(read_until_closed(&mut victim), b"");
        assert_eq!(proxy.faults_fired(), 1);
        assert_eq!(proxy.bytes_forwarded_upstream(), 0);

        let mut later = connect(&proxy);
        round_trip(&mut later, b"fine");
    }

    #[test]
    fn drop_stops_accepting_and_closes_open_connections() {
        let echo = echo_server();
        let proxy = FaultProxy::start(&echo.address.to_string());
        let address = proxy.local;
        let mut open = connect(&proxy);
        round_trip(&mut open, b"ping");
        drop(proxy);

        assert_eq!(read_until_closed(&mut open), b"");
        assert!(TcpStream::connect(address).is_err(), "still accepting on {address}");
    }

    #[test]
    #[should_panic(expected = "not a loopback address")]
    fn refuses_a_non_loopback_upstream() {
        FaultProxy::start("http://192.0.2.1:80");
    }
}
