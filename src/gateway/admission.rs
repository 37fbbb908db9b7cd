//! New connections admitted per client address at a steady rate, the excess held unread.
//!
//! A client that opens connection after connection (a flood of request bodies, each on a
//! fresh connection) costs a server an accept, a task, a request head and a close each time,
//! on the same threads that serve everyone else's requests. Refusing the excess at the accept
//! does not stop that: a refused client reconnects at once. Holding it does: a connection over
//! its address's rate waits, accepted but unread, until the address's bucket has room, so a
//! client that waits for each answer before its next connection slows to the rate, and its
//! bytes wait in the kernel's buffers instead of being read and thrown away.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// How many new connections each client address may open: a token bucket per address (IPv4
/// address, or IPv6 `/64`), refilled at [`per_second`](ConnectionAdmissionBuilder::per_second)
/// up to [`burst`](ConnectionAdmissionBuilder::burst). A connection over the rate waits,
/// accepted but unread, in a queue of at most
/// [`waiting`](ConnectionAdmissionBuilder::waiting) per address, served first come, first
/// served as the bucket refills; past that it is closed at once. A connection therefore waits
/// at most `waiting ÷ per_second` seconds. At most 256 connections are held in all (each is a
/// file descriptor); when that many are, a newcomer from an address holding fewer than the
/// busiest takes the place of the busiest address's newest, so a few flooding addresses
/// cannot take every place.
///
/// Connections already open are never limited: keep-alive clients pay nothing. Behind a
/// proxy or load balancer every connection comes from its address, so turn this on only where
/// clients connect directly (or give it a rate that the proxy's own connections fit under).
/// Held connections are closed, unserved, when the server stops accepting (shutdown), as
/// connections still in the kernel's backlog are.
///
/// ```
/// use jwt_gate::gateway::ConnectionAdmission;
///
/// let admission = ConnectionAdmission::builder()
///     .per_second(100)
///     .burst(200)
///     .waiting(64)
///     .build();
/// assert_eq!(admission.per_second(), 100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionAdmission {
    per_second: u32,
    burst: u32,
    waiting: u32,
    addresses: u32,
}

impl ConnectionAdmission {
    /// Starts a policy: 100 new connections a second per address, bursts of twice the rate,
    /// 64 held.
    pub fn builder() -> ConnectionAdmissionBuilder {
        ConnectionAdmissionBuilder {
            admission: Self {
                per_second: 100,
                burst: 0,
                waiting: 64,
                addresses: 65_536,
            },
            burst: None,
        }
    }

    /// New connections an address may open per second, sustained.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// New connections an address may open at once after a quiet spell.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Connections over the rate held per address; further ones are closed.
    pub fn waiting(&self) -> u32 {
        self.waiting
    }

    /// Addresses remembered at once; a new address past this many, when none can be
    /// forgotten (an address is forgotten once its bucket is full again and it has nothing
    /// held), is admitted without being counted.
    pub fn addresses(&self) -> u32 {
        self.addresses
    }

    /// The time one connection's worth of the bucket takes to refill.
    fn interval(&self) -> Duration {
        Duration::from_secs(1) / self.per_second
    }

    /// How far ahead of now the bucket may be spent: the burst less the one being handed out.
    fn tolerance(&self) -> Duration {
        self.interval()
            .checked_mul(self.burst - 1)
            .unwrap_or(Duration::MAX)
    }
}

/// Builds a [`ConnectionAdmission`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ConnectionAdmissionBuilder {
    admission: ConnectionAdmission,
    /// `None`: twice the rate, whatever the rate.
    burst: Option<u32>,
}

impl ConnectionAdmissionBuilder {
    /// New connections an address may open per second, sustained (default 100).
    pub fn per_second(mut self, connections: u32) -> Self {
        self.admission.per_second = connections;
        self
    }

    /// New connections an address may open at once (default: twice the rate).
    pub fn burst(mut self, connections: u32) -> Self {
        self.burst = Some(connections);
        self
    }

    /// Connections over the rate held per address before further ones are closed (default
    /// 64).
    pub fn waiting(mut self, connections: u32) -> Self {
        self.admission.waiting = connections;
        self
    }

    /// Addresses remembered at once (default 65,536).
    pub fn addresses(mut self, addresses: u32) -> Self {
        self.admission.addresses = addresses;
        self
    }

    /// The policy.
    ///
    /// # Panics
    ///
    /// If the rate, the burst or the address count is zero: a policy is configuration.
    pub fn build(self) -> ConnectionAdmission {
        let mut admission = self.admission;
        admission.burst = self
            .burst
            .unwrap_or_else(|| admission.per_second.saturating_mul(2));
        assert!(
            admission.per_second > 0,
            "the connection rate per address must be positive"
        );
        assert!(
            admission.burst > 0,
            "the connection burst per address must be positive"
        );
        assert!(
            admission.addresses > 0,
            "the number of addresses remembered must be positive"
        );
        admission
    }
}

/// What an address is counted under: an IPv4 address, or an IPv6 address's `/64` (one host's
/// usual allotment, so that it cannot step through its own addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddressKey {
    V4(u32),
    V6(u64),
}

impl AddressKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                None => Self::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// One address's bucket, kept as the instant it is full again (the generic cell rate
/// algorithm's theoretical arrival time): each connection handed out pushes that instant one
/// interval on, and the bucket has room while it lies less than the burst's worth of
/// intervals ahead. Exact to the nanosecond however often it is asked, with no refill step to
/// round.
struct Bucket {
    full_at: Instant,
    held: VecDeque<(TcpStream, SocketAddr)>,
}

impl Bucket {
    /// Takes one connection's room if there is some.
    fn take(&mut self, admission: &ConnectionAdmission, now: Instant) -> bool {
        let from = self.full_at.max(now);
        if from.saturating_duration_since(now) > admission.tolerance() {
            return false;
        }
        self.full_at = from + admission.interval();
        true
    }

    /// When the bucket next has room for a connection.
    fn ready_at(&self, admission: &ConnectionAdmission) -> Instant {
        self.full_at
            .checked_sub(admission.tolerance())
            .unwrap_or(self.full_at)
    }

    /// Full and holding nothing: the same as a bucket made afresh.
    fn is_idle(&self, now: Instant) -> bool {
        self.full_at <= now && self.held.is_empty()
    }
}

/// A [`TcpListener`] whose [`accept`](Self::accept) keeps to a [`ConnectionAdmission`].
pub struct AdmittingListener {
    listener: TcpListener,
    /// `None`: every connection is handed out as it comes (the servers' default).
    admission: Option<ConnectionAdmission>,
    buckets: HashMap<AddressKey, Bucket>,
    /// The addresses with connections held, so that finding the next one due is not a walk
    /// over every address.
    held: Vec<AddressKey>,
    swept: Instant,
}

impl std::fmt::Debug for AdmittingListener {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AdmittingListener")
            .field("listener", &self.listener)
            .field("admission", &self.admission)
            .field("addresses", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

impl AdmittingListener {
    /// Wraps `listener`: [`accept`](Self::accept) hands out its connections within
    /// `admission`, or as they come with `None`.
    ///
    /// ```no_run
    /// use jwt_gate::gateway::{AdmittingListener, ConnectionAdmission};
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// let admission = ConnectionAdmission::builder().per_second(50).build();
    /// let mut listener = AdmittingListener::new(listener, Some(admission));
    /// loop {
    ///     let (stream, peer) = listener.accept().await?;
    ///     // Serve `stream`, e.g. with hyper's `serve_connection`.
    ///     # drop((stream, peer));
    /// }
    /// # }
    /// ```
    pub fn new(listener: TcpListener, admission: Option<ConnectionAdmission>) -> Self {
        Self {
            listener,
            admission,
            buckets: HashMap::new(),
            held: Vec::new(),
            swept: Instant::now(),
        }
    }

    /// The next connection within the policy: a new one whose address has room, or one held
    /// earlier whose turn has come. Errors are the listener's own (out of file descriptors,
    /// say); connections held stay held.
    pub async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let Some(admission) = self.admission else {
            return self.listener.accept().await;
        };
        loop {
            let due = self.next_due(&admission);
            tokio::select! {
                biased;
                () = sleep_until(due.map(|(at, _)| at)) => {
                    let (_, key) = due.expect("a sleep ends only when something is due");
                    if let Some(connection) = self.release(&admission, key) {
                        return Ok(connection);
                    }
                }
                accepted = self.listener.accept() => {
                    let (stream, peer) = accepted?;
                    if let Some(connection) = self.admit(&admission, stream, peer) {
                        return Ok(connection);
                    }
                }
            }
        }
    }

    /// The listener's own address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A new connection: handed out if its address has room (and none of its connections
    /// are waiting, which go first), held if its queue has room, else closed (dropped).
    fn admit(
        &mut self,
        admission: &ConnectionAdmission,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(TcpStream, SocketAddr)> {
        let now = Instant::now();
        if now.saturating_duration_since(self.swept) > SWEEP_EVERY {
            self.sweep(now);
        }
        let key = AddressKey::of(peer.ip());
        if !self.buckets.contains_key(&key) && self.buckets.len() >= admission.addresses as usize {
            // A sweep walks every address: at most one per interval, or connections from
            // ever new addresses would make each accept a walk.
            if now.saturating_duration_since(self.swept) > SWEEP_WHEN_FULL {
                self.sweep(now);
            }
            if self.buckets.len() >= admission.addresses as usize {
                // Every address remembered is busy: this one goes uncounted rather than
                // making room by forgetting one that is being held back.
                return Some((stream, peer));
            }
        }
        let bucket = self.buckets.entry(key).or_insert_with(|| Bucket {
            full_at: now,
            held: VecDeque::new(),
        });
        if bucket.held.is_empty() && bucket.take(admission, now) {
            return Some((stream, peer));
        }
        let queued = bucket.held.len();
        if queued >= admission.waiting as usize {
            // Closed at once (dropped): this address has all the places it may have.
            return None;
        }
        if self.held_count() >= MAX_HELD && !self.make_room_for(queued) {
            return None;
        }
        let bucket = self.buckets.get_mut(&key)?;
        if bucket.held.is_empty() {
            self.held.push(key);
        }
        bucket.held.push_back((stream, peer));
        None
    }

    /// Connections held, all addresses together.
    fn held_count(&self) -> usize {
        self.held
            .iter()
            .filter_map(|key| self.buckets.get(key))
            .map(|bucket| bucket.held.len())
            .sum()
    }

    /// With every place taken, closes the newest connection of the address holding the most,
    /// if it holds more than `queued` plus one: each address keeps a fair share of the places.
    fn make_room_for(&mut self, queued: usize) -> bool {
        let busiest = self
            .held
            .iter()
            .filter_map(|key| Some((self.buckets.get(key)?.held.len(), *key)))
            .max_by_key(|(held, _)| *held);
        let Some((most, key)) = busiest else {
            return false;
        };
        if most <= queued + 1 {
            return false;
        }
        let Some(bucket) = self.buckets.get_mut(&key) else {
            return false;
        };
        // Dropped: closed. The busiest queue is never emptied by this (it held more than one).
        drop(bucket.held.pop_back());
        true
    }

    /// The address whose held connection is due first, and when.
    fn next_due(&self, admission: &ConnectionAdmission) -> Option<(Instant, AddressKey)> {
        self.held
            .iter()
            .filter_map(|key| {
                let bucket = self.buckets.get(key)?;
                Some((bucket.ready_at(admission), *key))
            })
            .min_by_key(|(at, _)| *at)
    }

    /// The oldest connection held for `key`, now that its bucket has room.
    fn release(
        &mut self,
        admission: &ConnectionAdmission,
        key: AddressKey,
    ) -> Option<(TcpStream, SocketAddr)> {
        let bucket = self.buckets.get_mut(&key)?;
        if !bucket.take(admission, Instant::now()) {
            return None;
        }
        let connection = bucket.held.pop_front();
        if bucket.held.is_empty() {
            self.held.retain(|held| *held != key);
        }
        connection
    }

    /// Forgets addresses whose buckets are full again and hold nothing: they would be made
    /// afresh exactly as they are.
    fn sweep(&mut self, now: Instant) {
        self.buckets.retain(|_, bucket| !bucket.is_idle(now));
        self.swept = now;
    }
}

/// How often idle addresses are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// How often, at most, idle addresses are looked for when the map is full.
const SWEEP_WHEN_FULL: Duration = Duration::from_millis(100);

/// Connections held at once, all addresses together: each is a file descriptor, and
/// addresses are many.
const MAX_HELD: usize = 256;

/// Sleeps until `at`, or forever when nothing is due.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;

    use super::*;

    /// A connection from `from` (a loopback address) to `to`, with `byte` sent on it so the
    /// server side can tell which one it accepted.
    async fn connect(from: Ipv4Addr, to: SocketAddr, byte: u8) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        let mut stream = socket.connect(to).await.unwrap();
        stream.write_all(&[byte]).await.unwrap();
        stream
    }

    async fn accepted_byte(listener: &mut AdmittingListener) -> u8 {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut byte = [0];
        stream.read_exact(&mut byte).await.unwrap();
        byte[0]
    }

    async fn listener(admission: ConnectionAdmission) -> (AdmittingListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (AdmittingListener::new(listener, Some(admission)), addr)
    }

    const ONE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
    const TWO: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

    #[tokio::test]
    async fn connections_over_the_rate_wait_their_turn_in_order_and_stay_open() {
        let admission = ConnectionAdmission::builder()
            .per_second(4)
            .burst(2)
            .build();
        let (mut listener, addr) = listener(admission).await;
        let mut clients = Vec::new();
        for byte in 1..=5 {
            clients.push(connect(ONE, addr, byte).await);
        }
        let started = Instant::now();
        let mut order = Vec::new();
        for _ in 1..=5 {
            order.push(accepted_byte(&mut listener).await);
        }
        // The burst at once, then one every quarter second: the last three wait 0.75 s in
        // all, and none was dropped.
        assert_eq!(order, [1, 2, 3, 4, 5]);
        assert!(started.elapsed() >= Duration::from_millis(700));
        drop(clients);
    }

    #[tokio::test]
    async fn each_address_has_its_own_bucket() {
        let admission = ConnectionAdmission::builder()
            .per_second(1)
            .burst(1)
            .build();
        let (mut listener, addr) = listener(admission).await;
        let _first = connect(ONE, addr, 1).await;
        assert_eq!(accepted_byte(&mut listener).await, 1);
        // The second from the same address waits a second; one from another address,
        // connecting after it, is handed out first.
        let _held = connect(ONE, addr, 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _other = connect(TWO, addr, 3).await;
        assert_eq!(accepted_byte(&mut listener).await, 3);
        assert_eq!(accepted_byte(&mut listener).await, 2);
    }

    #[tokio::test]
    async fn past_the_queue_connections_are_closed_at_once() {
        let admission = ConnectionAdmission::builder()
            .per_second(1)
            .burst(1)
            .waiting(1)
            .build();
        let (mut listener, addr) = listener(admission).await;
        let _first = connect(ONE, addr, 1).await;
        assert_eq!(accepted_byte(&mut listener).await, 1);
        let _held = connect(ONE, addr, 2).await;
        let mut refused = connect(ONE, addr, 3).await;
        // Accepting goes on while the held one waits: the third is closed meanwhile.
        let accept = tokio::spawn(async move {
            let byte = accepted_byte(&mut listener).await;
            (byte, listener)
        });
        let mut buffer = [0; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut buffer))
            .await
            .expect("the refused connection is closed, not held");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let (byte, _listener) = accept.await.unwrap();
        assert_eq!(byte, 2);
    }

    #[tokio::test]
    async fn without_a_policy_every_connection_is_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = AdmittingListener::new(listener, None);
        let mut clients = Vec::new();
        for byte in 1..=50 {
            clients.push(connect(ONE, addr, byte).await);
        }
        for byte in 1..=50 {
            assert_eq!(accepted_byte(&mut listener).await, byte);
        }
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddressKey::of(a.into()), AddressKey::of(b.into()));
        assert_ne!(AddressKey::of(a.into()), AddressKey::of(c.into()));
        let v4 = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(
            AddressKey::of(v4.to_ipv6_mapped().into()),
            AddressKey::of(v4.into())
        );
        // No /64 falls on an IPv4 key.
        assert_ne!(
            AddressKey::of("::".parse::<Ipv6Addr>().unwrap().into()),
            AddressKey::of(Ipv4Addr::UNSPECIFIED.into())
        );
    }

    #[tokio::test]
    async fn idle_addresses_are_forgotten_when_the_map_is_full() {
        let admission = ConnectionAdmission::builder()
            .per_second(1_000)
            .burst(1)
            .addresses(1)
            .build();
        let (mut listener, addr) = listener(admission).await;
        let _one = connect(ONE, addr, 1).await;
        assert_eq!(accepted_byte(&mut listener).await, 1);
        // The first address's bucket is full again within a millisecond: forgotten at the
        // next sweep (at most one every 100 ms while the map is full), making room for the
        // second, which is then counted.
        tokio::time::sleep(SWEEP_WHEN_FULL + Duration::from_millis(20)).await;
        let _two = connect(TWO, addr, 2).await;
        assert_eq!(accepted_byte(&mut listener).await, 2);
        assert_eq!(listener.buckets.len(), 1);
        assert!(listener.buckets.contains_key(&AddressKey::of(TWO.into())));
    }

    #[tokio::test]
    async fn connections_held_are_bounded_in_all_whatever_the_addresses() {
        let admission = ConnectionAdmission::builder()
            .per_second(1)
            .burst(1)
            .waiting(64)
            .build();
        let (mut admitting, _) = listener(admission).await;
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = plain.local_addr().unwrap();
        let (mut handed_out, mut clients) = (0, Vec::new());
        // Five addresses, 60 connections each: five within the rate, 295 over it, of which
        // 64 per address could wait but only MAX_HELD in all do.
        for index in 0..300u16 {
            let from = Ipv4Addr::new(127, 0, 0, 1 + (index % 5) as u8);
            clients.push(connect(from, addr, 0).await);
            let (stream, peer) = plain.accept().await.unwrap();
            handed_out += usize::from(admitting.admit(&admission, stream, peer).is_some());
        }
        assert_eq!(handed_out, 5);
        assert_eq!(admitting.held_count(), MAX_HELD);
        let held: usize = admitting
            .buckets
            .values()
            .map(|bucket| bucket.held.len())
            .sum();
        assert_eq!(held, MAX_HELD);

        // The places are full, but not to a quiet address's detriment: its connection over
        // the rate is held, in place of the busiest address's newest.
        let quiet = Ipv4Addr::new(127, 0, 0, 9);
        for expected in [true, false] {
            clients.push(connect(quiet, addr, 0).await);
            let (stream, peer) = plain.accept().await.unwrap();
            assert_eq!(
                admitting.admit(&admission, stream, peer).is_some(),
                expected
            );
        }
        assert_eq!(admitting.held_count(), MAX_HELD);
        let quiet = &admitting.buckets[&AddressKey::of(quiet.into())];
        assert_eq!(quiet.held.len(), 1);
    }

    #[test]
    fn a_bucket_refills_however_often_it_is_asked() {
        let admission = ConnectionAdmission::builder()
            .per_second(1)
            .burst(1)
            .build();
        let start = Instant::now();
        let mut bucket = Bucket {
            full_at: start,
            held: VecDeque::new(),
        };
        assert!(bucket.take(&admission, start));
        // Asked every 999 µs (a flood from the same address): the room comes back after one
        // second all the same, not never.
        let mut granted = None;
        for step in 1..=2_000u32 {
            let now = start + Duration::from_micros(999) * step;
            if bucket.take(&admission, now) {
                granted = Some(now - start);
                break;
            }
        }
        let granted = granted.expect("the bucket refilled");
        assert!(granted >= Duration::from_secs(1), "{granted:?}");
        assert!(granted < Duration::from_millis(1_001), "{granted:?}");
    }

    #[test]
    fn a_burst_is_handed_out_at_once_then_one_per_interval() {
        let admission = ConnectionAdmission::builder()
            .per_second(10)
            .burst(3)
            .build();
        let start = Instant::now();
        let mut bucket = Bucket {
            full_at: start,
            held: VecDeque::new(),
        };
        let taken = (0..4).filter(|_| bucket.take(&admission, start)).count();
        assert_eq!(taken, 3);
        assert_eq!(
            bucket.ready_at(&admission),
            start + Duration::from_millis(100)
        );
        assert!(!bucket.take(&admission, start + Duration::from_millis(99)));
        assert!(bucket.take(&admission, start + Duration::from_millis(100)));
        assert!(!bucket.is_idle(start + Duration::from_millis(100)));
        assert!(bucket.is_idle(start + Duration::from_millis(400)));
    }
}
