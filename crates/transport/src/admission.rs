//! Who may connect to a server, and how many at once: the limits of an [`Admission`] and the
//! [`Gate`] that counts connections against them.
//!
//! A connection is counted in one of two ways in its life. Until it has finished its handshake
//! it is *handshaking*: it has not shown that it is a client, and a host can open such
//! connections faster than any deadline closes them. So they are bounded on their own, per
//! address and in all, and at a bound the oldest handshaking connection of the address (in
//! all: of the address that holds the most) is closed to make room, so that a newcomer, who
//! may be a real client behind the same address, is never refused. Once greeted it is
//! *established* and counts against the established limits, which refuse a newcomer, with a
//! reason in the handshake's answer. Handshaking connections never take an established place,
//! so that idle connections from a host cannot lock that host's real clients out.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::AccessToken;

/// How many established connections a server holds at once by default. Each costs a task and
/// two small buffers; a thousand is far more than a lab needs and far less than the machine can
/// hold.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
/// How many established connections one IP address may hold at once by default, so that one
/// misbehaving host cannot take every place.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// How many connections may be in their handshake at once by default, from every address
/// together: each costs a task and a socket before it has shown that it is a client at all.
pub const DEFAULT_MAX_HANDSHAKING: usize = 1_024;
/// How many connections from one IP address may be in their handshake at once by default. A
/// real client sends its handshake right after connecting and is greeted within microseconds,
/// so a host's real clients are rarely more than a few handshaking at once. Under a flood of
/// new connections from the same address, this many newer arrivals close a connection still
/// in its handshake: the more, the longer a real client there has to send its handshake (256
/// arrivals are tens of milliseconds of a flood as fast as loopback allows), while each place
/// costs only a task and a socket.
pub const DEFAULT_MAX_HANDSHAKING_PER_IP: usize = 256;
/// How long a connection may take to finish its handshake by default. Loopback and LAN clients
/// need microseconds; a peer that sends nothing, or half a handshake, holds its place no longer.
/// Clients wait longer for the answer ([`crate::handshake::HANDSHAKE_TIMEOUT`]), since their
/// wait also counts the time their connection spends in the server's accept queue.
pub const DEFAULT_HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);
/// How many requests one connection may have in flight at once by default: a miner with 32
/// publishers needs 32; a client that never reads its replies is held to this many tasks.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: usize = 256;

/// Who may connect to a server, and how many at once.
#[derive(Clone, Debug)]
pub struct Admission {
    /// The token every client must offer; none admits every client.
    pub token: AccessToken,
    /// Established connections held at once; a client beyond it is refused in the handshake.
    pub max_connections: usize,
    /// Established connections held at once per IP address.
    pub max_connections_per_ip: usize,
    /// Connections in their handshake at once; beyond it the oldest of the address holding the
    /// most is closed.
    pub max_handshaking: usize,
    /// Connections in their handshake at once per IP address; beyond it the oldest of that
    /// address is closed.
    pub max_handshaking_per_ip: usize,
    /// How long a connection may take to finish its handshake.
    pub handshake_deadline: Duration,
    /// Requests in flight per connection; more are answered with an error.
    pub max_requests_per_connection: usize,
    /// TLS to require of every connection, before the handshake; none serves plain TCP.
    pub tls: Option<crate::ServerTls>,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            token: AccessToken::none(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_handshaking: DEFAULT_MAX_HANDSHAKING,
            max_handshaking_per_ip: DEFAULT_MAX_HANDSHAKING_PER_IP,
            handshake_deadline: DEFAULT_HANDSHAKE_DEADLINE,
            max_requests_per_connection: DEFAULT_MAX_REQUESTS_PER_CONNECTION,
            tls: None,
        }
    }
}

/// The counts of one server's connections against its [`Admission`]. Cloning shares them.
#[derive(Clone)]
pub(crate) struct Gate {
    max_connections: usize,
    max_connections_per_ip: usize,
    max_handshaking: usize,
    max_handshaking_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    /// Per address, its handshaking connections oldest first: a number that orders them, and
    /// the token that closes one.
    handshaking: HashMap<IpAddr, VecDeque<(u64, CancellationToken)>>,
    handshaking_total: usize,
    next_arrival: u64,
    established: HashMap<IpAddr, usize>,
    established_total: usize,
}

impl Gate {
    pub(crate) fn new(admission: &Admission) -> Self {
        Self {
            max_connections: admission.max_connections,
            max_connections_per_ip: admission.max_connections_per_ip,
            max_handshaking: admission.max_handshaking,
            max_handshaking_per_ip: admission.max_handshaking_per_ip,
            counts: Arc::default(),
        }
    }

    // No lock is held across an await: every count changes in a few instructions, so the
    // std mutex is cheaper than tokio's.
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a new connection from `peer` as handshaking until the returned place is dropped.
    /// At a limit, the oldest handshaking connection of `peer`'s address (at the limit in all:
    /// of the address holding the most) has its `close` token cancelled to make room.
    pub(crate) fn arrive(&self, peer: SocketAddr, close: CancellationToken) -> Handshaking {
        let ip = peer.ip();
        let mut made_room = None;
        let place = {
            let mut counts = self.counts();
            let own = counts.handshaking.get(&ip).map_or(0, VecDeque::len);
            let crowded = if own >= self.max_handshaking_per_ip {
                Some((ip, self.max_handshaking_per_ip, "from one address"))
            } else if counts.handshaking_total >= self.max_handshaking {
                counts
                    .handshaking
                    .iter()
                    .max_by_key(|(_, queue)| queue.len())
                    .map(|(ip, _)| (*ip, self.max_handshaking, "in all"))
            } else {
                None
            };
            if let Some((crowded_ip, limit, scope)) = crowded {
                if let Some((_, oldest)) = counts.pop_oldest(crowded_ip) {
                    made_room = Some((oldest, crowded_ip, limit, scope));
                }
            }
            let arrival = counts.next_arrival;
            counts.next_arrival += 1;
            counts
                .handshaking
                .entry(ip)
                .or_default()
                .push_back((arrival, close));
            counts.handshaking_total += 1;
            Handshaking {
                gate: self.clone(),
                ip,
                arrival,
            }
        };
        if let Some((oldest, crowded_ip, limit, scope)) = made_room {
            tracing::debug!(
                "closed the oldest connection from {crowded_ip} still in its handshake, to make \
                 room for {peer}: {limit} handshaking connections {scope} are the limit"
            );
            oldest.cancel();
        }
        place
    }

    /// An established place for `peer`, or none (logged) when a limit is reached.
    pub(crate) fn establish(&self, peer: SocketAddr) -> Option<Established> {
        let ip = peer.ip();
        let mut counts = self.counts();
        if counts.established_total >= self.max_connections {
            drop(counts);
            tracing::debug!(
                "refused the connection from {peer}: {} established connections are the limit",
                self.max_connections
            );
            return None;
        }
        let own = counts.established.entry(ip).or_default();
        if *own >= self.max_connections_per_ip {
            drop(counts);
            tracing::debug!(
                "refused the connection from {peer}: {} established connections from one \
                 address are the limit",
                self.max_connections_per_ip
            );
            return None;
        }
        *own += 1;
        counts.established_total += 1;
        Some(Established {
            gate: self.clone(),
            ip,
        })
    }
}

impl Counts {
    fn pop_oldest(&mut self, ip: IpAddr) -> Option<(u64, CancellationToken)> {
        let queue = self.handshaking.get_mut(&ip)?;
        let oldest = queue.pop_front();
        if queue.is_empty() {
            self.handshaking.remove(&ip);
        }
        if oldest.is_some() {
            self.handshaking_total -= 1;
        }
        oldest
    }
}

/// A connection's place among the handshaking ones, given back when dropped (unless it was
/// taken to make room).
pub(crate) struct Handshaking {
    gate: Gate,
    ip: IpAddr,
    arrival: u64,
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        let mut counts = self.gate.counts();
        let Some(queue) = counts.handshaking.get_mut(&self.ip) else {
            return;
        };
        let Some(index) = queue
            .iter()
            .position(|(arrival, _)| *arrival == self.arrival)
        else {
            return;
        };
        queue.remove(index);
        if queue.is_empty() {
            counts.handshaking.remove(&self.ip);
        }
        counts.handshaking_total -= 1;
    }
}

/// A connection's established place, given back when dropped.
pub(crate) struct Established {
    gate: Gate,
    ip: IpAddr,
}

impl Drop for Established {
    fn drop(&mut self) {
        let mut counts = self.gate.counts();
        counts.established_total -= 1;
        if let Some(own) = counts.established.get_mut(&self.ip) {
            *own -= 1;
            if *own == 0 {
                counts.established.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(per_ip: usize, total: usize) -> Gate {
        Gate::new(&Admission {
            max_handshaking_per_ip: per_ip,
            max_handshaking: total,
            max_connections_per_ip: per_ip,
            max_connections: total,
            ..Admission::default()
        })
    }

    fn peer(host: u8, port: u16) -> SocketAddr {
        ([127, 0, 0, host], port).into()
    }

    #[test]
    fn at_the_per_address_limit_the_oldest_handshaking_connection_of_that_address_makes_room() {
        let gate = gate(3, 100);
        let tokens: Vec<_> = (0..5).map(|_| CancellationToken::new()).collect();
        let other_host = CancellationToken::new();
        let _other = gate.arrive(peer(2, 1), other_host.clone());
        let mut places: Vec<_> = tokens[..3]
            .iter()
            .enumerate()
            .map(|(port, token)| gate.arrive(peer(1, port as u16), token.clone()))
            .collect();
        assert!(tokens.iter().all(|token| !token.is_cancelled()));
        // The fourth closes the first; the fifth the second.
        places.push(gate.arrive(peer(1, 3), tokens[3].clone()));
        places.push(gate.arrive(peer(1, 4), tokens[4].clone()));
        let closed: Vec<_> = tokens.iter().map(CancellationToken::is_cancelled).collect();
        assert_eq!(closed, [true, true, false, false, false]);
        assert!(
            !other_host.is_cancelled(),
            "another address keeps its place"
        );
        // A connection that finished its handshake leaves; the next arrival finds room.
        drop(places.remove(3));
        let newest = CancellationToken::new();
        let _newest = gate.arrive(peer(1, 5), newest.clone());
        assert!(!tokens[2].is_cancelled() && !tokens[4].is_cancelled());
        // Full again: the oldest left is the third.
        let _next = gate.arrive(peer(1, 6), CancellationToken::new());
        assert!(tokens[2].is_cancelled() && !tokens[4].is_cancelled() && !newest.is_cancelled());
    }

    #[test]
    fn at_the_limit_in_all_the_address_holding_the_most_makes_room() {
        let gate = gate(10, 4);
        let crowd: Vec<_> = (0..3).map(|_| CancellationToken::new()).collect();
        let _crowd: Vec<_> = crowd
            .iter()
            .enumerate()
            .map(|(port, token)| gate.arrive(peer(1, port as u16), token.clone()))
            .collect();
        let lone = CancellationToken::new();
        let _lone = gate.arrive(peer(2, 0), lone.clone());
        let _newcomer = gate.arrive(peer(3, 0), CancellationToken::new());
        assert!(crowd[0].is_cancelled());
        assert!(!crowd[1].is_cancelled() && !crowd[2].is_cancelled() && !lone.is_cancelled());
    }

    #[test]
    fn established_places_are_refused_at_their_limits_and_handshaking_ones_take_none() {
        let gate = gate(2, 3);
        // Handshaking connections, as many as allowed, take no established place.
        let _handshaking: Vec<_> = (0..3)
            .map(|port| gate.arrive(peer(1, port), CancellationToken::new()))
            .collect();
        let first = gate.establish(peer(1, 10)).expect("room");
        let _second = gate.establish(peer(1, 11)).expect("room");
        assert!(gate.establish(peer(1, 12)).is_none(), "per address");
        let _third = gate.establish(peer(2, 10)).expect("room");
        assert!(gate.establish(peer(3, 10)).is_none(), "in all");
        drop(first);
        assert!(
            gate.establish(peer(1, 12)).is_some(),
            "a closed one makes room"
        );
    }
}

#[cfg(test)]
mod accepting {
    use super::*;
    use crate::{accept, handshake, HandshakeError};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::task::TaskTracker;

    /// Whether the server closed `stream` within `wait`.
    async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
        let mut byte = [0; 1];
        matches!(
            tokio::time::timeout(wait, stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn a_client_behind_an_address_full_of_silent_connections_is_served_and_the_oldest_closed()
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let admission = Admission {
            max_handshaking_per_ip: 4,
            max_connections_per_ip: 2,
            ..Admission::default()
        };
        let shutdown = CancellationToken::new();
        // Each served connection is held until its client closes it.
        let hold = |mut stream: crate::Stream, _| async move {
            let _ = stream.read(&mut [0; 1]).await;
        };
        let server = tokio::spawn(accept(
            listener,
            admission,
            shutdown.clone(),
            TaskTracker::new(),
            hold,
        ));
        let mut silent = Vec::new();
        for _ in 0..4 {
            silent.push(TcpStream::connect(address).await.unwrap());
        }
        let none = AccessToken::none();
        let mut first = TcpStream::connect(address).await.unwrap();
        handshake::offer(&mut first, &none)
            .await
            .expect("served, though its address holds as many silent connections as allowed");
        assert!(closed_within(&mut silent[0], Duration::from_secs(5)).await);
        let mut second = TcpStream::connect(address).await.unwrap();
        handshake::offer(&mut second, &none).await.expect("served");
        // The established limit of the address is reached: a third is told why.
        let mut third = TcpStream::connect(address).await.unwrap();
        let refused = handshake::offer(&mut third, &none).await;
        assert!(
            matches!(refused, Err(HandshakeError::TooManyConnections)),
            "{refused:?}"
        );
        // Only the oldest silent connection made room; the others wait out their deadline.
        for stream in &mut silent[1..] {
            assert!(!closed_within(stream, Duration::from_millis(50)).await);
        }
        drop(first);
        let mut fourth = TcpStream::connect(address).await.unwrap();
        let mut served = handshake::offer(&mut fourth, &none).await;
        // The server sees the first close a moment after it was dropped.
        for _ in 0..100 {
            if served.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            fourth = TcpStream::connect(address).await.unwrap();
            served = handshake::offer(&mut fourth, &none).await;
        }
        served.expect("a closed connection makes room");
        shutdown.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_on_the_handshake_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let admission = Admission {
            handshake_deadline: Duration::from_millis(200),
            ..Admission::default()
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(accept(
            listener,
            admission,
            shutdown.clone(),
            TaskTracker::new(),
            |_, _| async {},
        ));
        let mut silent = TcpStream::connect(address).await.unwrap();
        let mut half = TcpStream::connect(address).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut half, &handshake::MAGIC[..4])
            .await
            .unwrap();
        let started = std::time::Instant::now();
        assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
        assert!(closed_within(&mut half, Duration::from_secs(5)).await);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "closed after {took:?}");
        shutdown.cancel();
    }
}
