//! A TCP proxy in front of a test server that can lose a reply on purpose:
//! the server runs the command, the client never hears back, and its
//! connection breaks, exactly as when a network link drops at the worst
//! moment.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to the next command that contains the trigger bytes.
#[derive(Default)]
struct Trap {
    trigger: Option<Vec<u8>>,
    /// How many times the trap fired.
    fired: AtomicU32,
}

/// A proxy listening on a free loopback port.
pub struct LossyProxy {
    pub port: u16,
    trap: Arc<Mutex<Trap>>,
    fired: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl LossyProxy {
    /// Proxies connections to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let trap = Arc::new(Mutex::new(Trap::default()));
        let fired = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (trap, fired, stop) = (Arc::clone(&trap), Arc::clone(&fired), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            let server = TcpStream::connect(("127.0.0.1", upstream))
                                .expect("the upstream server accepts");
                            pump_pair(client, server, Arc::clone(&trap), Arc::clone(&fired));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        LossyProxy {
            port,
            trap,
            fired,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The next time a client sends bytes containing `trigger`, they reach
    /// the server, but the server's reply is thrown away and the client's
    /// connection is closed. Fires once.
    pub fn lose_reply_after(&self, trigger: &[u8]) {
        self.trap.lock().unwrap().trigger = Some(trigger.to_vec());
    }

    /// How many replies were lost so far.
    pub fn fired(&self) -> u32 {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Two threads: client → server (watching for the trigger) and
/// server → client (silenced once it fired).
fn pump_pair(client: TcpStream, server: TcpStream, trap: Arc<Mutex<Trap>>, fired: Arc<AtomicU32>) {
    let silenced = Arc::new(AtomicBool::new(false));
    let (mut client_in, mut server_out) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    {
        let silenced = Arc::clone(&silenced);
        let client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let read = match client_in.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => read,
                };
                let chunk = &buffer[..read];
                let hit = {
                    let mut trap = trap.lock().unwrap();
                    match &trap.trigger {
                        Some(trigger) if contains(chunk, trigger) => {
                            trap.trigger = None;
                            trap.fired.fetch_add(1, Ordering::SeqCst);
                            true
                        }
                        _ => false,
                    }
                };
                if hit {
                    silenced.store(true, Ordering::SeqCst);
                }
                if server_out.write_all(chunk).is_err() {
                    break;
                }
                if hit {
                    // Let the server run it and answer (into the void), then
                    // break the client's connection.
                    std::thread::sleep(Duration::from_millis(300));
                    fired.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server_out.shutdown(Shutdown::Both);
                    break;
                }
            }
            let _ = server_out.shutdown(Shutdown::Both);
        });
    }
    let (mut server_in, mut client_out) = (server, client);
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match server_in.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if silenced.load(Ordering::SeqCst) {
                continue;
            }
            if client_out.write_all(&buffer[..read]).is_err() {
                break;
            }
        }
        let _ = client_out.shutdown(Shutdown::Both);
    });
}
