//! The threads that serve `proxy` and `forward-auth`: one current-thread runtime per worker,
//! each with a listener of its own on the shared address (`SO_REUSEPORT`, so the kernel
//! spreads new connections over them) and, for the proxy, an upstream pool of its own, as
//! nginx's worker processes and Envoy's worker threads are. A connection, its requests and the
//! upstream connections they use then stay on one thread, and no task wakes another thread on
//! the way: on tokio's work-stealing runtime each request woke another thread once (one
//! `write` to its wake-up descriptor per request under `strace`), and `benches/program.rs`
//! measured the proxy at 0.60-0.68 × nginx's requests/s that way against 0.73-0.76 × on a
//! single current-thread runtime, on the same machine in the same hour.
//!
//! Everything else (key refreshes, the Redis mirror, the metrics listener, password hashing)
//! stays on the main runtime; what the workers share (the verifier, the revocation store, the
//! auth service) is thread-safe and reaches the main runtime's tasks through channels.

use std::future::Future;
use std::net::SocketAddr;

use tokio::sync::watch;

/// Where the workers are in their life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Stop accepting; connections already accepted are served on.
    Stopping,
    /// The drain is over: the worker's runtime ends, closing what is still open.
    Ended,
}

/// The default number of workers: one per core on Linux, where `SO_REUSEPORT` balances new
/// connections over the listeners; one elsewhere, where it does not.
pub(crate) fn default_count() -> usize {
    if cfg!(target_os = "linux") {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        1
    }
}

/// `count` listeners on `addr`, all bound to the same port (the one the kernel chose when
/// `addr`'s is 0), and that address.
pub(crate) fn listeners(
    addr: SocketAddr,
    count: usize,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), String> {
    let cannot = |error: std::io::Error| format!("cannot listen on {addr}: {error}");
    let first = bind(addr, count > 1).map_err(cannot)?;
    let local = first.local_addr().map_err(cannot)?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind(local, true).map_err(cannot)?);
    }
    Ok((listeners, local))
}

fn bind(addr: SocketAddr, shared: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted program rebinds while old connections linger.
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// `count` split evenly over `workers`, rounded down so the shares never add up to more than
/// `count` (callers have no more workers than `count`): each worker's share of a bound, as
/// nginx's `worker_connections` is each worker's.
pub(crate) fn share(count: usize, workers: usize) -> usize {
    (count / workers.max(1)).max(1)
}

/// A worker's signal to stop accepting.
pub(crate) type Stop = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs each worker on a thread of its own with its listener until `shutdown` resolves; then
/// every worker's [`Stop`] resolves, and once `drain` has run here and each worker's future has
/// returned, the workers' runtimes end. A worker's future returns when it has stopped accepting
/// (and drained, if it drains itself); the connections it spawned are served on until then.
pub(crate) async fn run<W, F>(
    workers: Vec<(std::net::TcpListener, W)>,
    shutdown: impl Future<Output = ()>,
    drain: impl Future<Output = ()>,
) -> Result<(), String>
where
    W: FnOnce(tokio::net::TcpListener, Stop) -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let (phase, watching) = watch::channel(Phase::Serving);
    let mut threads = Vec::with_capacity(workers.len());
    for (index, (listener, work)) in workers.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start worker {index}'s runtime: {error}"))?;
        let watching = watching.clone();
        let thread = std::thread::Builder::new()
            .name(format!("jwt-gate-w{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            tracing::error!(worker = index, %error, "cannot take the listener");
                            return;
                        }
                    };
                    work(
                        listener,
                        Box::pin(reached(watching.clone(), Phase::Stopping)),
                    )
                    .await;
                    reached(watching, Phase::Ended).await;
                });
            })
            .map_err(|error| format!("cannot start worker {index}: {error}"))?;
        threads.push(thread);
    }
    shutdown.await;
    phase.send_replace(Phase::Stopping);
    drain.await;
    phase.send_replace(Phase::Ended);
    tokio::task::spawn_blocking(move || {
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a worker panicked");
            }
        }
    })
    .await
    .map_err(|error| error.to_string())
}

/// Resolves once the workers are at `wanted` or beyond (or the sender is gone).
async fn reached(mut watching: watch::Receiver<Phase>, wanted: Phase) {
    let _ = watching.wait_for(|phase| *phase >= wanted).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_never_add_up_to_more_than_the_whole() {
        assert_eq!(share(1024, 2), 512);
        assert_eq!(share(1025, 2), 512);
        assert_eq!(share(3, 3), 1);
        assert_eq!(share(10, 0), 10);
    }

    #[tokio::test]
    async fn the_listeners_share_one_port_chosen_by_the_kernel() {
        let (listeners, local) = listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_ne!(local.port(), 0);
        assert_eq!(listeners.len(), 3);
        for listener in &listeners {
            assert_eq!(listener.local_addr().unwrap(), local);
        }
    }
}
