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
//! Key refreshes, the Redis mirror and the metrics listener stay on the main runtime, and
//! password hashing on its own threads; what the workers share (the verifier, the revocation
//! store, the auth service) is thread-safe. A connection one of them opens from a request (to
//! PostgreSQL, or to Redis again after a reconnect) lives on that worker's runtime while
//! serving all of them, which is why no worker's runtime ends before every worker is done.

use std::future::Future;
use std::net::SocketAddr;

use tokio::sync::watch;

/// Where the workers are in their life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Stop accepting; connections already accepted are served on.
    Stopping,
    /// The drain is over (or the program is failing): the worker's runtime ends, closing what
    /// is still open.
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
    // First on its own, without SO_REUSEPORT: a port some other process (of the same user)
    // already shares that way must be "in use" here too, never quietly split with it.
    let first = bind(addr, false).map_err(cannot)?;
    let local = first.local_addr().map_err(cannot)?;
    if count <= 1 {
        return Ok((vec![first], local));
    }
    drop(first);
    let listeners = (0..count)
        .map(|_| bind(local, true))
        .collect::<Result<_, _>>()
        .map_err(cannot)?;
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

/// Runs each worker on a thread of its own with its listener until `shutdown` resolves. Then
/// every worker's [`Stop`] resolves; once each worker's future has returned (it stopped
/// accepting, and drained if it drains itself), `drain` runs here; then the workers' runtimes
/// end. A worker's connections are served on until then, and connections that live on a
/// worker's runtime but serve all of them (a Redis or PostgreSQL connection made again from
/// a request) stay open until every worker is done.
pub(crate) async fn run<W, F>(
    workers: Vec<(std::net::TcpListener, W)>,
    shutdown: impl Future<Output = ()>,
    drain: impl Future<Output = ()>,
) -> Result<(), String>
where
    W: FnOnce(tokio::net::TcpListener, Stop) -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let count = workers.len();
    let (phase, watching) = watch::channel(Phase::Serving);
    let (done, mut all_done) = tokio::sync::mpsc::channel::<()>(count.max(1));
    let mut threads = Vec::with_capacity(count);
    for (index, (listener, work)) in workers.into_iter().enumerate() {
        let (watching, done) = (watching.clone(), Done(done.clone()));
        let thread = std::thread::Builder::new()
            .name(format!("jwt-gate-w{index}"))
            .spawn(move || serve(index, listener, work, watching, done))
            .map_err(|error| format!("cannot start worker {index}: {error}"))?;
        threads.push(thread);
    }
    drop(done);
    tokio::select! {
        () = shutdown => {}
        // A worker that ends by itself (it could not start, or panicked) stops the program,
        // rather than leaving fewer workers serving quietly.
        _ = all_done.recv() => {
            phase.send_replace(Phase::Ended);
            return Err("a worker stopped serving (the log says why)".to_owned());
        }
    }
    phase.send_replace(Phase::Stopping);
    for _ in 0..count {
        if all_done.recv().await.is_none() {
            break;
        }
    }
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

/// Says a worker is done when dropped: once its future has returned, or its thread ends
/// (unwinding included) before that.
struct Done(tokio::sync::mpsc::Sender<()>);

impl Drop for Done {
    fn drop(&mut self) {
        // The channel holds one message per worker: this never waits, and never fails
        // while the program listens.
        let _ = self.0.try_send(());
    }
}

/// One worker's thread: its runtime, built here so it is also dropped here, outside any
/// other runtime.
fn serve<W, F>(
    index: usize,
    listener: std::net::TcpListener,
    work: W,
    watching: watch::Receiver<Phase>,
    done: Done,
) where
    W: FnOnce(tokio::net::TcpListener, Stop) -> F,
    F: Future<Output = ()>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(worker = index, %error, "cannot start the worker's runtime");
            return;
        }
    };
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
        drop(done);
        reached(watching, Phase::Ended).await;
    });
    // Blocking work still running (a DNS lookup, a SQLite call) does not hold the exit.
    runtime.shutdown_timeout(BLOCKING_GRACE);
}

/// How long a worker's exit waits for blocking work it started.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

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
