//! Password hashing: argon2id by default, legacy bcrypt accepted for verification, all of it
//! run on a few dedicated threads behind a semaphore so a burst of logins never stalls the
//! threads that serve other requests.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::metrics::Stopwatch;
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization as _};

/// The fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The most characters a password may have: long passphrases are welcome, megabyte
/// "passwords" that only burn CPU are not. Nothing is ever truncated.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Whether a password matched a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It did not.
    Mismatch,
    /// It did, and the hash is current.
    Match,
    /// It did, but the hash is legacy (bcrypt) or weaker than today's parameters: the service
    /// stores a fresh hash.
    MatchNeedsRehash,
}

/// Hashing could not be done. The message is for logs only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashError(String);

impl HashError {
    /// An error with a message for logs.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "password hashing failed: {}", self.0)
    }
}

impl std::error::Error for HashError {}

/// A password hashing scheme. Both methods are CPU-bound and blocking: the service calls
/// them on threads of their own, never on an async worker.
///
/// Both receive the password exactly as the client sent it; normalising it is the scheme's
/// business ([`Argon2Hasher`] applies NFKC).
///
/// [`Argon2Hasher`] is the one to use; the trait exists so a deployment can tune or wrap it
/// (for instance to count calls in a test).
pub trait PasswordHasher: Send + Sync + 'static {
    /// A new hash of `password`, with a fresh random salt.
    fn hash(&self, password: &str) -> Result<String, HashError>;

    /// Whether `password` matches `hash`. A hash this scheme cannot read is a mismatch.
    fn verify(&self, password: &str, hash: &str) -> Verdict;
}

/// argon2id (RFC 9106) with at least the OWASP minimum: 19 MiB of memory, 2 passes, 1 lane.
///
/// Verification also accepts argon2 hashes of other parameters (reported as needing a rehash
/// when weaker) and legacy bcrypt hashes (`$2a$`, `$2b$`, `$2y$`, as Python's passlib and
/// FastAPI tutorial apps stored them), always reported as needing a rehash. bcrypt only ever
/// read the first 72 bytes of a password; this verifier never truncates, so a longer password
/// does not match a bcrypt hash. Until a legacy user logs in once, their logins take bcrypt's
/// time rather than argon2's, which tells a patient observer that such an account exists.
///
/// Passwords are NFKC-normalised before hashing and verifying (NIST SP 800-63B §5.1.1.2), so
/// a password typed as precomposed `é` (NFC, most keyboards) or as `e` plus a combining accent
/// (NFD, some input methods) is one password, and so are full-width and ASCII letters. Hashes
/// made before that, from the password as typed, still verify:
///
/// - a bcrypt hash is checked against the password as typed only (the apps that made them
///   normalised nothing), and a match is re-hashed from the normalised form;
/// - an argon2 hash is checked against the normalised form first; when that fails and the
///   password as typed differs from it, against the password as typed too, and such a match
///   is reported as needing a rehash. That second run costs a wrong password that is not
///   already in NFKC twice the time, for known and unknown users alike.
///
/// ```
/// use jwt_gate::service::{Argon2Hasher, PasswordHasher, Verdict};
///
/// let hasher = Argon2Hasher::default();
/// let hash = hasher.hash("correct horse battery staple").unwrap();
/// assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
/// assert_eq!(hasher.verify("correct horse battery staple", &hash), Verdict::Match);
/// assert_eq!(hasher.verify("wrong", &hash), Verdict::Mismatch);
///
/// // "café" with a precomposed é, then with e + U+0301 COMBINING ACUTE ACCENT.
/// let hash = hasher.hash("caf\u{e9} au lait").unwrap();
/// assert_eq!(hasher.verify("cafe\u{301} au lait", &hash), Verdict::Match);
/// ```
#[derive(Debug, Clone)]
pub struct Argon2Hasher {
    params: Params,
}

impl Default for Argon2Hasher {
    fn default() -> Self {
        Self {
            params: Params::new(
                Params::DEFAULT_M_COST,
                Params::DEFAULT_T_COST,
                Params::DEFAULT_P_COST,
                None,
            )
            .expect("argon2's own default parameters are valid"),
        }
    }
}

impl Argon2Hasher {
    /// argon2id with `memory_kib` KiB of memory, `passes` passes and `lanes` lanes; `None`
    /// when any is below the minimum (19 MiB, 2 passes, 1 lane) or invalid.
    pub fn with_params(memory_kib: u32, passes: u32, lanes: u32) -> Option<Self> {
        if memory_kib < Params::DEFAULT_M_COST || passes < Params::DEFAULT_T_COST || lanes < 1 {
            return None;
        }
        let params = Params::new(memory_kib, passes, lanes, None).ok()?;
        Some(Self { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    fn is_current(&self, hash: &PasswordHash<'_>) -> bool {
        let Ok(params) = Params::try_from(hash) else {
            return false;
        };
        hash.algorithm == Algorithm::Argon2id.ident()
            && hash.version == Some(Version::V0x13.into())
            && params.m_cost() >= self.params.m_cost()
            && params.t_cost() >= self.params.t_cost()
            && params.p_cost() >= self.params.p_cost()
    }
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|prefix| hash.starts_with(prefix))
}

/// The form a password is hashed in: NFKC. Borrowed when the password is in it already, as
/// nearly every password is.
fn normalized(password: &str) -> Cow<'_, str> {
    if is_nfkc_quick(password.chars()) == IsNormalized::Yes {
        Cow::Borrowed(password)
    } else {
        Cow::Owned(password.nfkc().collect())
    }
}

impl PasswordHasher for Argon2Hasher {
    fn hash(&self, password: &str) -> Result<String, HashError> {
        let password = normalized(password);
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).map_err(|error| HashError::new(error.to_string()))?;
        let salt =
            SaltString::encode_b64(&salt).map_err(|error| HashError::new(error.to_string()))?;
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| HashError::new(error.to_string()))
    }

    fn verify(&self, password: &str, hash: &str) -> Verdict {
        if is_bcrypt(hash) {
            // Legacy apps hashed the password as typed; the rehash is of the normalised form.
            return match bcrypt::non_truncating_verify(password, hash) {
                Ok(true) => Verdict::MatchNeedsRehash,
                _ => Verdict::Mismatch,
            };
        }
        let Ok(parsed) = PasswordHash::new(hash) else {
            return Verdict::Mismatch;
        };
        // The parameters come from the stored hash, so older hashes still verify.
        let argon2 = Argon2::default();
        let normal = normalized(password);
        if argon2.verify_password(normal.as_bytes(), &parsed).is_ok() {
            return if self.is_current(&parsed) {
                Verdict::Match
            } else {
                Verdict::MatchNeedsRehash
            };
        }
        // A hash stored before passwords were normalised was made from the password as typed.
        if *normal != *password && argon2.verify_password(password.as_bytes(), &parsed).is_ok() {
            return Verdict::MatchNeedsRehash;
        }
        Verdict::Mismatch
    }
}

/// Why a password operation did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PasswordFailure {
    /// Too many hash operations are already waiting: shed load rather than queue without end.
    Busy,
    /// The hasher failed (or panicked).
    Failed(HashError),
}

/// Runs a [`PasswordHasher`] on its own threads, at most `permits` at a time, with at most
/// `max_waiting` more logins queued and as many registrations in a queue of their own;
/// registrations use at most all permits but one.
#[derive(Clone)]
pub(crate) struct Passwords {
    inner: Arc<PasswordsInner>,
}

struct PasswordsInner {
    hasher: Arc<dyn PasswordHasher>,
    threads: HashThreads,
    permits: Arc<Semaphore>,
    /// Held by each registration from before it queues for a hashing permit until its hash
    /// is done: registrations never hold or queue for more permits than this, so logins
    /// always find a short queue, whatever the flood of sign-ups.
    registration_permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    registrations_waiting: AtomicUsize,
    max_registrations_waiting: usize,
    // A hash of a random password, made by the same hasher with the same parameters, that
    // unknown users' logins are verified against: same work, same answer as a wrong password.
    dummy_hash: OnceLock<String>,
}

/// Queued hash operations allowed per permit before the service answers `503`...
const WAITING_PER_PERMIT: usize = 32;
/// ...but never fewer than this, so leaving cores free for serving does not also shrink the
/// bursts a small machine absorbs.
const MIN_WAITING: usize = 64;

/// How many hashes run at once by default: every core but one, so a burst of logins always
/// leaves a core to serve everything else (on one core, one).
pub fn default_hashing_concurrency() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |cores| usize::from(cores).saturating_sub(1).max(1))
}

impl Passwords {
    pub(crate) fn new(
        hasher: Arc<dyn PasswordHasher>,
        concurrency: usize,
        low_priority: bool,
    ) -> Self {
        let permits = concurrency.max(1);
        let max_waiting = (permits * WAITING_PER_PERMIT).max(MIN_WAITING);
        let passwords = Self {
            inner: Arc::new(PasswordsInner {
                hasher,
                threads: HashThreads::start(permits, low_priority),
                permits: Arc::new(Semaphore::new(permits)),
                // Every permit but one, so one is always left for logins; with a single
                // permit, a login waits behind at most one registration's hash.
                registration_permits: Arc::new(Semaphore::new(permits.saturating_sub(1).max(1))),
                waiting: AtomicUsize::new(0),
                max_waiting,
                registrations_waiting: AtomicUsize::new(0),
                // A queue of their own, as long as the logins': waiting there takes nothing
                // from logins, who meet at most the registrations holding a lane permit.
                max_registrations_waiting: max_waiting,
                dummy_hash: OnceLock::new(),
            }),
        };
        crate::metrics::hash_queue_capacity(Lane::Login.label(), max_waiting);
        crate::metrics::hash_queue_capacity(Lane::Registration.label(), max_waiting);
        // Make the dummy hash now, on the hashing threads, so that not even the first unknown
        // user's login does extra work.
        let inner = passwords.inner.clone();
        passwords
            .inner
            .threads
            .run(Box::new(move || drop(inner.dummy_hash())));
        passwords
    }

    async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        work: impl FnOnce(&PasswordsInner) -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, PasswordFailure> {
        let inner = &self.inner;
        let closed = |_| PasswordFailure::Failed(HashError::new("semaphore closed"));
        let queued = Stopwatch::start();
        let (lane_permit, permit) = {
            // Counted while waiting, and uncounted however the wait ends: a client that hangs
            // up mid-queue must not leave a phantom waiter behind.
            let (lane_permit, _waiting) = match lane {
                Lane::Login => (
                    None,
                    Waiting::enter(&inner.waiting, inner.max_waiting, lane)?,
                ),
                Lane::Registration => {
                    let waiting = Waiting::enter(
                        &inner.registrations_waiting,
                        inner.max_registrations_waiting,
                        lane,
                    )?;
                    let lane_permit = inner
                        .registration_permits
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(closed)?;
                    (Some(lane_permit), waiting)
                }
            };
            let permit = inner
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(closed)?;
            (lane_permit, permit)
        };
        queued.hash_waited(lane.label());
        let shared = self.inner.clone();
        let (done, outcome) = tokio::sync::oneshot::channel();
        // The permit travels with the work: if the caller goes away, the hash still runs to
        // its end on its thread, and the permit is released only then.
        self.inner.threads.run(Box::new(move || {
            let started = Stopwatch::start();
            let result = work(&shared);
            started.hash_ran(lane.label());
            drop(permit);
            drop(lane_permit);
            let _ = done.send(result);
        }));
        outcome
            .await
            .map_err(|_| PasswordFailure::Failed(HashError::new("the password hasher panicked")))?
            .map_err(PasswordFailure::Failed)
    }

    /// Hashes `password` for storage, as part of a login (a rehash).
    pub(crate) async fn hash(&self, password: String) -> Result<String, PasswordFailure> {
        self.run(Lane::Login, move |inner| inner.hasher.hash(&password))
            .await
    }

    /// Hashes a new account's `password`, in the registrations' own queue and within their
    /// share of the hashing threads.
    pub(crate) async fn hash_for_registration(
        &self,
        password: String,
    ) -> Result<String, PasswordFailure> {
        self.run(Lane::Registration, move |inner| {
            inner.hasher.hash(&password)
        })
        .await
    }

    /// Verifies `password` against `stored`, or, when there is no such user, against the
    /// dummy hash, so an unknown user costs the same work and gets the same answer.
    pub(crate) async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<Verdict, PasswordFailure> {
        self.run(Lane::Login, move |inner| {
            Ok(match stored {
                Some(hash) => inner.hasher.verify(&password, &hash),
                None => {
                    let dummy = inner.dummy_hash()?;
                    // Whatever the dummy says, an unknown user never logs in.
                    let _ = inner.hasher.verify(&password, dummy);
                    Verdict::Mismatch
                }
            })
        })
        .await
    }
}

/// Whose hashing capacity an operation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Logins (and the rehash after one): the whole queue.
    Login,
    /// New accounts: a queue of their own and a share of the permits, never all of them.
    Registration,
}

impl Lane {
    /// The lane as a metric label.
    fn label(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Registration => "registration",
        }
    }
}

/// One caller queued for a permit, counted in `count` (and in `lane`'s queue gauge), for as
/// long as this guard lives.
struct Waiting<'a>(&'a AtomicUsize, Lane);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize, max: usize, lane: Lane) -> Result<Self, PasswordFailure> {
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(PasswordFailure::Busy);
        }
        crate::metrics::hash_queue(lane.label(), true);
        Ok(Self(count, lane))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::hash_queue(self.1.label(), false);
    }
}

impl PasswordsInner {
    fn dummy_hash(&self) -> Result<&str, HashError> {
        if let Some(hash) = self.dummy_hash.get() {
            return Ok(hash);
        }
        let mut random = [0u8; 32];
        getrandom::getrandom(&mut random).map_err(|error| HashError::new(error.to_string()))?;
        let password: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        let hash = self.hasher.hash(&password)?;
        Ok(self.dummy_hash.get_or_init(|| hash))
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads that do nothing but hash passwords: their number is the hashing concurrency, and
/// their priority can be lowered without touching Tokio's shared blocking pool. They end when
/// the last handle to the service goes.
struct HashThreads {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl HashThreads {
    fn start(count: usize, low_priority: bool) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for _ in 0..count {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name("jwt-gate-hash".to_owned())
                .spawn(move || {
                    if low_priority {
                        lower_this_threads_priority();
                    }
                    loop {
                        let next = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        let Ok(job) = next else { break };
                        // A panicking hasher fails its own call (its answer is never sent),
                        // not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                // Without its threads the service could never answer a login: better to fail
                // where it is built than to hang at the first request.
                .expect("the operating system refused to start a password hashing thread");
        }
        Self { jobs }
    }

    fn run(&self, job: Job) {
        // The threads outlive every handle that can send, so the queue is always open.
        let _ = self.jobs.send(job);
    }
}

/// Asks the scheduler to run this thread after others: hashing then takes the CPU time that
/// serving leaves. On Linux that is `SCHED_IDLE`, which the scheduler preempts as soon as an
/// ordinary thread wakes: at nice 10 alone, a hash ran on to the end of its time slice first,
/// and the protected route's p99 went up 7 × under a login flood (issue 12). Elsewhere, or
/// where the OS refuses, about nice 10; failing that, hashing runs as before.
fn lower_this_threads_priority() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        // The crate then also resets the thread's nice value to 0, which fails (harmlessly:
        // nice means nothing under SCHED_IDLE) in a process started at a higher one; so the
        // policy itself is what is checked.
        let _ = thread_priority::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            ThreadPriority::Min,
            idle,
        );
        if thread_priority::thread_schedule_policy().is_ok_and(|policy| policy == idle) {
            return;
        }
    }
    let lower = thread_priority::ThreadPriorityValue::try_from(25u8)
        .map(thread_priority::ThreadPriority::Crossplatform);
    if let Err(error) = lower
        .map_err(|error| format!("{error:?}"))
        .and_then(|priority| {
            thread_priority::set_current_thread_priority(priority)
                .map_err(|error| format!("{error:?}"))
        })
    {
        tracing::debug!(%error, "could not lower the password hashing threads' priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's logins must not stall its protected route: a hash in progress gives way
    /// to any ordinary thread the moment it wakes.
    #[cfg(target_os = "linux")]
    #[test]
    fn low_priority_hashing_threads_run_under_sched_idle() {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        let policy_of_a_hashing_thread = |low_priority| {
            let threads = HashThreads::start(1, low_priority);
            let (answer, policy) = std::sync::mpsc::channel();
            threads.run(Box::new(move || {
                let _ = answer.send(thread_priority::thread_schedule_policy().unwrap());
            }));
            policy.recv().unwrap()
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        assert_eq!(policy_of_a_hashing_thread(true), idle);
        assert_ne!(policy_of_a_hashing_thread(false), idle);
    }

    #[test]
    fn parameters_below_the_minimum_are_refused() {
        assert!(Argon2Hasher::with_params(8 * 1024, 2, 1).is_none());
        assert!(Argon2Hasher::with_params(19 * 1024, 1, 1).is_none());
        assert!(Argon2Hasher::with_params(19 * 1024, 2, 0).is_none());
        assert!(Argon2Hasher::with_params(64 * 1024, 3, 1).is_some());
    }

    #[test]
    fn weaker_argon2_hashes_verify_but_ask_for_a_rehash() {
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 1, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let hash = weak
            .hash_password(b"passphrase", &salt)
            .unwrap()
            .to_string();
        let hasher = Argon2Hasher::default();
        assert_eq!(
            hasher.verify("passphrase", &hash),
            Verdict::MatchNeedsRehash
        );
        assert_eq!(hasher.verify("passphrasf", &hash), Verdict::Mismatch);
    }

    #[test]
    fn hashing_leaves_a_core_free_and_never_runs_on_none() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(
            default_hashing_concurrency(),
            cores.saturating_sub(1).max(1)
        );
        let passwords = Passwords::new(Arc::new(Argon2Hasher::default()), 0, true);
        assert_eq!(passwords.inner.permits.available_permits(), 1);
        let wider = Passwords::new(Arc::new(Argon2Hasher::default()), 3, false);
        assert_eq!(wider.inner.permits.available_permits(), 3);
    }

    #[tokio::test]
    async fn callers_that_give_up_in_the_queue_leave_no_trace() {
        let passwords = Passwords::new(Arc::new(Argon2Hasher::default()), 2, false);
        let permits = passwords.inner.permits.clone();
        let all = u32::try_from(permits.available_permits()).unwrap();
        let held = permits.acquire_many_owned(all).await.unwrap();
        for _ in 0..3 {
            // Every permit is held, so this can only wait; the timeout drops it mid-queue.
            let queued = passwords.hash("a password".into());
            assert!(
                tokio::time::timeout(std::time::Duration::from_millis(5), queued)
                    .await
                    .is_err()
            );
        }
        assert_eq!(passwords.inner.waiting.load(Ordering::SeqCst), 0);
        drop(held);
        assert!(passwords.hash("a password".into()).await.is_ok());
    }

    #[tokio::test]
    async fn a_full_queue_is_busy_not_unbounded() {
        let passwords = Passwords::new(Arc::new(Argon2Hasher::default()), 2, false);
        let permits = passwords.inner.permits.clone();
        let all = u32::try_from(permits.available_permits()).unwrap();
        let _held = permits.acquire_many_owned(all).await.unwrap();
        let max = passwords.inner.max_waiting;
        let queued: Vec<_> = (0..max)
            .map(|_| {
                let passwords = passwords.clone();
                tokio::spawn(async move { passwords.hash("a password".into()).await })
            })
            .collect();
        while passwords.inner.waiting.load(Ordering::SeqCst) < max {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            passwords.hash("one too many".into()).await,
            Err(PasswordFailure::Busy)
        );
        for task in queued {
            task.abort();
        }
    }

    #[test]
    fn garbage_hashes_never_match() {
        let hasher = Argon2Hasher::default();
        for hash in ["", "$2b$", "plain-text-password", "$argon2id$v=19$m=1"] {
            assert_eq!(
                hasher.verify("plain-text-password", hash),
                Verdict::Mismatch
            );
        }
    }
}
