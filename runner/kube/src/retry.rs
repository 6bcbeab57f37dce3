//! Retries of API calls that may succeed when repeated: conflicts, throttling (429),
//! server errors (5xx) and transport failures. Everything else fails at once.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};

/// Most attempts of one call.
const ATTEMPTS: usize = 6;

/// Whether repeating the call may help.
pub(crate) fn is_retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            status.code == 429 || status.code >= 500 || (status.code == 409 && !status.is_already_exists())
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `call` until it succeeds, fails with an error not worth repeating, or has been
/// tried [`ATTEMPTS`] times, backing off exponentially with jitter.
pub(crate) async fn with_retries<T, F, Fut>(call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(ATTEMPTS - 1)
        .with_jitter();
    call.retry(backoff).sleep(tokio::time::sleep).when(is_retryable).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure("x", reason).with_code(code).boxed())
    }

    #[test]
    fn which_failures_are_retried() {
        assert!(is_retryable(&api(409, "Conflict")));
        assert!(is_retryable(&api(429, "TooManyRequests")));
        assert!(is_retryable(&api(500, "InternalError")));
        assert!(is_retryable(&api(503, "ServiceUnavailable")));
        assert!(!is_retryable(&api(409, "AlreadyExists")));
        assert!(!is_retryable(&api(403, "Forbidden")));
        assert!(!is_retryable(&api(404, "NotFound")));
        assert!(!is_retryable(&api(422, "Invalid")));
    }
}
